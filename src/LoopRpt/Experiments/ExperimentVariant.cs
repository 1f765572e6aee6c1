using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using LoopRpt.Objectives;

namespace LoopRpt.Experiments;

/// <summary>
/// A LoopRPT setting tried beside the published defaults: a name, the <see cref="LoopRptObjectiveOptions"/> to use, and optionally
/// its own learning rate. The options' <see cref="LoopRptObjectiveOptions.Seed"/> is ignored: each seed of the experiment sets it.
/// </summary>
public sealed partial class ExperimentVariant
{
    private readonly LoopRptObjectiveOptions _options;

    /// <summary>Creates a variant; the options are copied and validated.</summary>
    /// <param name="name">Arm name: letters, digits, '.', '_', '-' (it names a folder and a table row).</param>
    /// <param name="options">LoopRPT options (published defaults where not set).</param>
    /// <param name="learningRate">Peak learning rate, or null for the experiment's.</param>
    public ExperimentVariant(string name, LoopRptObjectiveOptions options, double? learningRate = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrEmpty(name) || name.Length > 64 || !NamePattern().IsMatch(name) || name.Trim('.').Length == 0)
            throw new ArgumentException($"Variant name '{name}' must be 1-64 letters, digits, '.', '_' or '-' (it names a folder).", nameof(name));
        if (learningRate is { } lr && (!(lr > 0) || double.IsInfinity(lr)))
            throw new ArgumentOutOfRangeException(nameof(learningRate), lr, $"Variant '{name}': the learning rate must be positive and finite.");
        _options = options.Clone();
        _options.Seed = LoopRptObjectiveOptions.Defaults.Seed;
        _options.Validate();
        Name = name;
        LearningRate = learningRate;
    }

    /// <summary>The arm's name.</summary>
    public string Name { get; }

    /// <summary>Peak learning rate, or null for the experiment's <see cref="ExperimentOptions.LearningRate"/>.</summary>
    public double? LearningRate { get; }

    /// <summary>A copy of the LoopRPT options (seed not set).</summary>
    public LoopRptObjectiveOptions Options => _options.Clone();

    /// <summary>
    /// <c>looprpt-all-tokens</c>: every real token is a "hard" token (<see cref="HardTokenMode.All"/>). An earlier
    /// single-seed experiment found it the best variant at CPU scale (docs/experiment.md).
    /// </summary>
    public static ExperimentVariant AllTokens() => new("looprpt-all-tokens", new LoopRptObjectiveOptions { HardTokens = HardTokenMode.All });

    /// <summary>The settings that differ from the published defaults, e.g. <c>HardTokens=All</c> (empty: the defaults).</summary>
    public string Describe()
    {
        var defaults = new LoopRptObjectiveOptions();
        var parts = Settable().Where(p => !Equals(p.GetValue(_options), p.GetValue(defaults)))
            .Select(p => p.Name + "=" + Format(p.GetValue(_options))).ToList();
        if (LearningRate is { } lr) parts.Insert(0, "lr=" + lr.ToString("G3", CultureInfo.InvariantCulture));
        return parts.Count == 0 ? "published defaults" : string.Join(", ", parts);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Describe()})";

    /// <summary>
    /// Parses <c>NAME[:KEY=VALUE,...]</c>. Keys are <see cref="LoopRptObjectiveOptions"/> property names (case-insensitive, e.g.
    /// <c>HardTokens=All</c>, <c>Rollouts=4</c>, <c>Sigma=0.3</c>, <c>Noise=Dropout</c>) or the short forms lr, g (Rollouts),
    /// hard (HardTokens: all, top, threshold), kl (KlCoef), ema (EmaDecay), chunk (RolloutsPerMicroBatch).
    /// </summary>
    /// <exception cref="FormatException">The text is malformed, a key is unknown or a value does not parse.</exception>
    /// <exception cref="ArgumentException">A value is out of range (the options' own validation).</exception>
    public static ExperimentVariant Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var c = CultureInfo.InvariantCulture;
        int colon = text.IndexOf(':');
        var name = (colon < 0 ? text : text[..colon]).Trim();
        var options = new LoopRptObjectiveOptions();
        double? lr = null;
        if (colon >= 0)
            foreach (var pair in text[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = pair.IndexOf('=');
                if (eq <= 0) throw new FormatException($"Variant '{text}': '{pair}' is not KEY=VALUE.");
                var (key, value) = (pair[..eq].Trim(), pair[(eq + 1)..].Trim());
                if (key.Equals("lr", StringComparison.OrdinalIgnoreCase))
                {
                    lr = double.TryParse(value, NumberStyles.Float, c, out var v) ? v : throw new FormatException($"Variant '{text}': lr '{value}' is not a number.");
                    continue;
                }
                var property = Settable().FirstOrDefault(p => p.Name.Equals(Aliases.GetValueOrDefault(key.ToLowerInvariant(), key), StringComparison.OrdinalIgnoreCase))
                    ?? throw new FormatException($"Variant '{text}': unknown key '{key}'; expected lr, g, hard, kl, ema, chunk or one of {string.Join(", ", Settable().Select(p => p.Name))}.");
                property.SetValue(options, ParseValue(property.PropertyType, value)
                    ?? throw new FormatException($"Variant '{text}': '{value}' is not a valid {property.Name} ({Expected(property.PropertyType)})."));
            }
        return new ExperimentVariant(name, options, lr);
    }

    private static readonly Dictionary<string, string> Aliases = new(StringComparer.Ordinal)
    {
        ["g"] = nameof(LoopRptObjectiveOptions.Rollouts), ["hard"] = nameof(LoopRptObjectiveOptions.HardTokens), ["kl"] = nameof(LoopRptObjectiveOptions.KlCoef),
        ["ema"] = nameof(LoopRptObjectiveOptions.EmaDecay), ["chunk"] = nameof(LoopRptObjectiveOptions.RolloutsPerMicroBatch),
    };

    /// <summary>The options a variant may set: every public settable property but the seed (the experiment owns it).</summary>
    private static IEnumerable<PropertyInfo> Settable()
        => typeof(LoopRptObjectiveOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && p.Name != nameof(LoopRptObjectiveOptions.Seed));

    private static object? ParseValue(Type type, string value)
    {
        var c = CultureInfo.InvariantCulture;
        if (type == typeof(double)) return double.TryParse(value, NumberStyles.Float, c, out var d) ? d : null;
        if (type == typeof(int)) return int.TryParse(value, NumberStyles.Integer, c, out var i) ? i : null;
        if (type == typeof(long)) return long.TryParse(value, NumberStyles.Integer, c, out var l) ? l : null;
        if (type == typeof(HardTokenMode) && value.Equals("top", StringComparison.OrdinalIgnoreCase)) return HardTokenMode.TopFraction;
        if (type == typeof(HardTokenMode) && value.Equals("threshold", StringComparison.OrdinalIgnoreCase)) return HardTokenMode.EntropyThreshold;
        if (type.IsEnum) return Enum.TryParse(type, value, ignoreCase: true, out var e) && Enum.IsDefined(type, e!) && !char.IsDigit(value[0]) ? e : null;
        return null;
    }

    private static string Expected(Type type) => type.IsEnum ? string.Join(" | ", Enum.GetNames(type)) : type == typeof(double) ? "a number" : "an integer";

    private static string Format(object? v) => v is IFormattable f ? f.ToString(null, CultureInfo.InvariantCulture) : v?.ToString() ?? "";

    [GeneratedRegex("^[A-Za-z0-9._-]+$")]
    private static partial Regex NamePattern();
}
