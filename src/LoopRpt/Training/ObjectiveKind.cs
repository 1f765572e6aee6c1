using System.Globalization;
using System.Reflection;
using LoopRpt.Objectives;

namespace LoopRpt.Training;

/// <summary>
/// A kind of training stage (pretrain, gate, looprpt, or one of your own): its name, the typed options its objective
/// takes, the optimizer defaults of its stages, how its options are bound from named text parameters (configuration,
/// command line) and how its objective is created. Kinds are collected in an <see cref="ObjectiveKindRegistry"/>, the one
/// place the CLI, the ML.NET trainer and hosting turn a stage into a <see cref="TrainingStage"/>.
/// </summary>
/// <remarks>
/// Error messages start with the stage's label (e.g. <c>Stages[1] (gate)</c>) when one is given. Bad parameters and options
/// of the wrong type are an <see cref="ArgumentException"/>; values out of range an <see cref="ArgumentOutOfRangeException"/>.
/// </remarks>
public abstract class ObjectiveKind
{
    private protected ObjectiveKind(string name, Type optionsType, OptimizerDefaults optimizerDefaults)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        Name = name;
        OptionsType = optionsType;
        OptimizerDefaults = optimizerDefaults ?? throw new ArgumentNullException(nameof(optimizerDefaults));
    }

    /// <summary>The kind's name as written in a plan (<c>--stages</c>, configuration); matched case-insensitively.</summary>
    public string Name { get; }

    /// <summary>The options class of the kind's objective (e.g. <see cref="PretrainObjectiveOptions"/>).</summary>
    public Type OptionsType { get; }

    /// <summary>The kind's one table of optimizer defaults: the settings of a stage of this kind that gives none.</summary>
    public OptimizerDefaults OptimizerDefaults { get; }

    /// <summary>The parameters <see cref="BindOptions"/> accepts: the settable properties of <see cref="OptionsType"/>.</summary>
    public abstract IReadOnlyList<string> ParameterNames { get; }

    /// <summary>
    /// Options from named text parameters (property names of <see cref="OptionsType"/>, case-insensitive; invariant-culture
    /// numbers, enum value names, true/false); absent parameters keep the options' defaults. The options are validated.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown parameter, or a value of the wrong type.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range.</exception>
    public abstract object BindOptions(IReadOnlyDictionary<string, string>? parameters, string? stage = null);

    /// <summary>
    /// The objective of a stage of <paramref name="steps"/> optimizer steps with <paramref name="options"/> (null: the defaults).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="options"/> is not an <see cref="OptionsType"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public abstract ITrainingObjective CreateObjective(object? options, long steps, string? stage = null);

    /// <summary>Throws when <paramref name="options"/> is neither null nor an <see cref="OptionsType"/>.</summary>
    public void CheckOptionsType(object? options, string? stage = null)
    {
        if (options is null || OptionsType.IsInstanceOfType(options)) return;
        throw new ArgumentException(Say(stage,
            $"ObjectiveOptions of a {Name} stage must be {OptionsType.Name}, but got {options.GetType().Name}."), "ObjectiveOptions");
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>A message with the stage's label in front, when there is one.</summary>
    internal static string Say(string? stage, string message) => stage is null ? message : $"{stage}: {message}";
}

/// <summary>
/// An <see cref="ObjectiveKind"/> whose objective takes options of type <typeparamref name="TOptions"/>. The text binder
/// sets its public settable properties of type double, float, int, long, bool, string or an enum (nullable ones too).
/// </summary>
/// <typeparam name="TOptions">The options class; a new instance holds the defaults.</typeparam>
public sealed class ObjectiveKind<TOptions> : ObjectiveKind where TOptions : class, new()
{
    private static readonly PropertyInfo[] Bindable = typeof(TOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.CanRead && p.SetMethod is { IsPublic: true } && IsBindable(p.PropertyType)).ToArray();

    private readonly Func<TOptions, long, ITrainingObjective> _create;
    private readonly Action<TOptions>? _validate;

    /// <summary>A kind named <paramref name="name"/>.</summary>
    /// <param name="name">The name used in plans (case-insensitive).</param>
    /// <param name="create">Creates the objective from validated options and the stage's optimizer steps.</param>
    /// <param name="optimizerDefaults">Optimizer defaults of its stages; null: <see cref="OptimizerDefaults.Pretraining"/>.</param>
    /// <param name="validate">
    /// Checks options (throwing <see cref="ArgumentOutOfRangeException"/> with the property as parameter name) before the
    /// objective is created, so bound parameters fail with the stage's label; null: only the objective's own checks.
    /// </param>
    public ObjectiveKind(string name, Func<TOptions, long, ITrainingObjective> create, OptimizerDefaults? optimizerDefaults = null,
                         Action<TOptions>? validate = null)
        : base(name, typeof(TOptions), optimizerDefaults ?? OptimizerDefaults.Pretraining)
    {
        _create = create ?? throw new ArgumentNullException(nameof(create));
        _validate = validate;
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> ParameterNames { get; } = Bindable.Select(p => p.Name).ToArray();

    /// <inheritdoc/>
    public override object BindOptions(IReadOnlyDictionary<string, string>? parameters, string? stage = null)
    {
        var options = new TOptions();
        foreach (var (key, text) in parameters ?? new Dictionary<string, string>())
        {
            var property = Bindable.FirstOrDefault(p => string.Equals(p.Name, key, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException(Say(stage,
                    $"unknown parameter '{key}'; a {Name} stage takes {(ParameterNames.Count == 0 ? "none" : string.Join(", ", ParameterNames))}."), "Parameters");
            property.SetValue(options, Parse(property, text, stage));
        }
        Validate(options, stage);
        return options;
    }

    /// <inheritdoc/>
    public override ITrainingObjective CreateObjective(object? options, long steps, string? stage = null)
    {
        CheckOptionsType(options, stage);
        var typed = (TOptions?)options ?? new TOptions();
        Validate(typed, stage);
        return _create(typed, steps);
    }

    private void Validate(TOptions options, string? stage)
    {
        try
        {
            _validate?.Invoke(options);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(e.ParamName, e.ActualValue, Say(stage, e.Message.Split(" (Parameter '")[0]));
        }
    }

    private object? Parse(PropertyInfo property, string? text, string? stage)
    {
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        var C = CultureInfo.InvariantCulture;
        text = text?.Trim();
        if (type == typeof(string)) return text;
        if (string.IsNullOrEmpty(text) && type != property.PropertyType) return null;   // an empty value clears a nullable setting
        ArgumentException Bad(string what) => new(Say(stage, $"parameter '{property.Name}' must be {what}; got '{text}'."), "Parameters");
        if (type.IsEnum)
            return Enum.TryParse(type, text, ignoreCase: true, out var e) && Enum.IsDefined(type, e!) && !char.IsAsciiDigit(text![0]) && text[0] != '-'
                ? e : throw Bad($"one of {string.Join(", ", Enum.GetNames(type))}");
        if (type == typeof(bool)) return bool.TryParse(text, out var b) ? b : throw Bad("true or false");
        if (type == typeof(int)) return int.TryParse(text, NumberStyles.Integer, C, out var i) ? i : throw Bad("an integer");
        if (type == typeof(long)) return long.TryParse(text, NumberStyles.Integer, C, out var l) ? l : throw Bad("an integer");
        if (type == typeof(float)) return float.TryParse(text, NumberStyles.Float, C, out var f) ? f : throw Bad("a number");
        return double.TryParse(text, NumberStyles.Float, C, out var d) ? d : throw Bad("a number");
    }

    private static bool IsBindable(Type t)
    {
        t = Nullable.GetUnderlyingType(t) ?? t;
        return t.IsEnum || t == typeof(double) || t == typeof(float) || t == typeof(int) || t == typeof(long) || t == typeof(bool) || t == typeof(string);
    }
}
