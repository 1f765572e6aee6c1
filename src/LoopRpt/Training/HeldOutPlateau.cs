using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Evaluation;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Training;

/// <summary>
/// "Train until held-out loss stops improving" (docs/experiment.md §4.4): every <paramref name="EvaluateEvery"/> steps the
/// stage's held-out next-token loss is measured at full depth (the last loop's read-out, <see cref="LoopEvaluator.EvaluateExit"/>
/// with <see cref="ExitMode.Last"/>); the stage stops when <paramref name="Patience"/> evaluations in a row have not
/// improved on the reference loss by at least <paramref name="MinRelativeDelta"/> (relative), or at <paramref name="MaxSteps"/>.
/// The weights of the lowest held-out loss seen are restored at the end. <paramref name="MaxSteps"/> is the stage's
/// length: it sizes the warmup and the cosine decay, so a stage stopped early ends partway down the cosine. The
/// parameters' default values are the defaults of the library and of <c>looprpt experiment</c>.
/// </summary>
/// <param name="EvaluateEvery">Steps between held-out evaluations. Default 50.</param>
/// <param name="Patience">Evaluations in a row without a significant improvement that stop the stage. Default 3.</param>
/// <param name="MinRelativeDelta">An evaluation improves when its loss is below reference × (1 − this); the reference is the loss of the last such improvement. Default 0.005.</param>
/// <param name="MaxSteps">The step cap; the stage's length for the learning-rate schedule. Default 3000.</param>
public sealed record PlateauRule(
    [property: JsonPropertyName("evaluate_every")] int EvaluateEvery = 50,
    [property: JsonPropertyName("patience")] int Patience = 3,
    [property: JsonPropertyName("min_relative_delta")] double MinRelativeDelta = 0.005,
    [property: JsonPropertyName("max_steps")] long MaxSteps = 3000)
{
    /// <summary>Checks every setting, throwing <see cref="ArgumentOutOfRangeException"/> naming the property.</summary>
    public void Validate()
    {
        if (EvaluateEvery < 1) throw new ArgumentOutOfRangeException(nameof(EvaluateEvery), EvaluateEvery, "EvaluateEvery must be at least 1.");
        if (Patience < 1) throw new ArgumentOutOfRangeException(nameof(Patience), Patience, "Patience must be at least 1.");
        if (!(MinRelativeDelta >= 0 && MinRelativeDelta < 1)) throw new ArgumentOutOfRangeException(nameof(MinRelativeDelta), MinRelativeDelta, "MinRelativeDelta must be in [0, 1).");
        if (MaxSteps < EvaluateEvery) throw new ArgumentOutOfRangeException(nameof(MaxSteps), MaxSteps, $"MaxSteps must be at least EvaluateEvery ({EvaluateEvery}): the stage must be evaluated at least once before the cap.");
    }
}

/// <summary>One held-out evaluation of a plateau-stopped stage.</summary>
/// <param name="Step">Stage steps completed when it was measured.</param>
/// <param name="Loss">Held-out next-token loss at full depth (nats per token).</param>
public sealed record PlateauPoint([property: JsonPropertyName("step")] long Step, [property: JsonPropertyName("loss")] double Loss);

/// <summary>The stopping rule of <see cref="PlateauRule"/> over a sequence of held-out losses (no model: unit-testable).</summary>
public sealed class PlateauTracker(PlateauRule rule)
{
    private readonly List<PlateauPoint> _curve = [];
    private double _reference = double.PositiveInfinity;
    private int _wait;

    /// <summary>The evaluations so far.</summary>
    public IReadOnlyList<PlateauPoint> Curve => _curve;

    /// <summary>The evaluation with the lowest loss so far (the first of equal ones); null before the first.</summary>
    public PlateauPoint? Best { get; private set; }

    /// <summary>Evaluations in a row, up to the last one, without a significant improvement.</summary>
    public int EvaluationsWithoutImprovement => _wait;

    /// <summary>Records one evaluation; true when the stage should stop (patience used up). A non-finite loss never improves.</summary>
    public bool Observe(long step, double loss)
    {
        var point = new PlateauPoint(step, loss);
        _curve.Add(point);
        if (double.IsFinite(loss) && (Best is null || loss < Best.Loss)) Best = point;
        if (double.IsFinite(loss) && (double.IsPositiveInfinity(_reference) || loss < _reference * (1 - rule.MinRelativeDelta)))
        {
            _reference = loss;
            _wait = 0;
        }
        else _wait++;
        return _wait >= rule.Patience;
    }
}

/// <summary>How a plateau-stopped stage ended; written beside a model as <see cref="FileName"/> (<see cref="WriteTo"/>).</summary>
/// <param name="StepsTaken">Optimizer steps the stage ran (its compute).</param>
/// <param name="BestStep">The step whose weights were kept (lowest held-out loss).</param>
/// <param name="BestLoss">The held-out loss at <paramref name="BestStep"/>.</param>
/// <param name="Plateaued">True: stopped on the plateau rule; false: the step cap was reached.</param>
/// <param name="Rule">The rule it ran under.</param>
/// <param name="Curve">Every held-out evaluation.</param>
public sealed record PlateauOutcome(
    [property: JsonPropertyName("steps_taken")] long StepsTaken,
    [property: JsonPropertyName("best_step")] long BestStep,
    [property: JsonPropertyName("best_loss")] double BestLoss,
    [property: JsonPropertyName("plateaued")] bool Plateaued,
    [property: JsonPropertyName("rule")] PlateauRule Rule,
    [property: JsonPropertyName("curve")] IReadOnlyList<PlateauPoint> Curve)
{
    /// <summary>The file in a model directory that holds the outcome of its plateau-stopped Stage I.</summary>
    public const string FileName = "stage1_budget.json";

    /// <summary>"plateau at step N" or "cap reached at step N", then the kept step and its loss.</summary>
    public string Reason => string.Create(CultureInfo.InvariantCulture,
        $"{(Plateaued ? $"plateau at step {StepsTaken} (no {Rule.MinRelativeDelta:P1} improvement in {Rule.Patience} evaluations)" : $"cap reached ({Rule.MaxSteps} steps)")}; weights of step {BestStep} kept (held-out loss {BestLoss:F4})");

    /// <summary>Writes the outcome into <paramref name="modelDirectory"/> as <see cref="FileName"/>.</summary>
    public void WriteTo(string modelDirectory)
        => AtomicDirectory.WriteAllText(Path.Combine(modelDirectory, FileName), JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>The outcome stored in <paramref name="modelDirectory"/>, or null when its Stage I ran a fixed number of steps.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid outcome.</exception>
    public static PlateauOutcome? ReadFrom(string modelDirectory)
    {
        var path = Path.Combine(modelDirectory, FileName);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<PlateauOutcome>(File.ReadAllText(path)) ?? throw new InvalidDataException($"'{path}' is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid {FileName}: {e.Message}", e);
        }
    }
}

/// <summary>
/// A stage's stop on held-out loss: give it to <see cref="TrainingStage.StopOnPlateau"/>, with the stage's steps equal to
/// <see cref="PlateauRule.MaxSteps"/>. The trainer evaluates after every <see cref="PlateauRule.EvaluateEvery"/>-th step
/// and at the cap, restores the best weights when the stage ends, and returns the <see cref="PlateauOutcome"/> in
/// <see cref="TrainingResult.Plateau"/>.
/// </summary>
/// <param name="Rule">The rule (validated by the trainer).</param>
/// <param name="HeldOut">Held-out batches the loss is measured on (not trained on).</param>
public sealed record HeldOutPlateau(PlateauRule Rule, IReadOnlyList<TokenBatch> HeldOut)
{
    internal void Validate(long stageSteps)
    {
        ArgumentNullException.ThrowIfNull(Rule);
        Rule.Validate();
        if (HeldOut is null || HeldOut.Count == 0 || HeldOut.All(b => b.TargetTokenCount == 0))
            throw new ArgumentException("The held-out plateau stop needs held-out batches with target tokens.", nameof(HeldOut));
        if (stageSteps != Rule.MaxSteps)
            throw new ArgumentException($"A stage stopped on a plateau runs {Rule.MaxSteps} steps at most (MaxSteps); its Steps are {stageSteps}. Give the stage MaxSteps steps: they size its learning-rate schedule.", nameof(HeldOut));
    }
}

/// <summary>A running <see cref="HeldOutPlateau"/>: its tracker and a copy of the best weights (detached, on the model's device).</summary>
internal sealed class PlateauRun(HeldOutPlateau plateau) : IDisposable
{
    private readonly PlateauTracker _tracker = new(plateau.Rule);
    private readonly Dictionary<string, Tensor> _best = new(StringComparer.Ordinal);

    /// <summary>Evaluates after stage step <paramref name="step"/> when it is due (every E steps, and at the cap); true when the stage should stop.</summary>
    public bool AfterStep(OuroForCausalLM lm, long step, bool cap)
    {
        if (step % plateau.Rule.EvaluateEvery != 0 && !cap) return false;
        var loss = LoopEvaluator.EvaluateExit(lm, plateau.HeldOut, ExitMode.Last).NegativeLogLikelihood;
        bool stop = _tracker.Observe(step, loss);
        if (ReferenceEquals(_tracker.Best, _tracker.Curve[^1])) Keep(lm);
        return stop;
    }

    /// <summary>Restores the best weights (when any evaluation was finite) and states the outcome.</summary>
    public PlateauOutcome Finish(OuroForCausalLM lm, long stepsTaken, bool plateaued)
    {
        if (_best.Count > 0)
        {
            using var noGrad = no_grad();
            foreach (var (name, p) in lm.UniqueParameters()) p.copy_(_best[name]);
        }
        var best = _tracker.Best ?? new PlateauPoint(stepsTaken, double.NaN);
        return new PlateauOutcome(stepsTaken, best.Step, best.Loss, plateaued, plateau.Rule, [.. _tracker.Curve]);
    }

    private void Keep(OuroForCausalLM lm)
    {
        using var noGrad = no_grad();
        foreach (var (name, p) in lm.UniqueParameters())
        {
            if (!_best.TryGetValue(name, out var copy)) _best[name] = copy = zeros_like(p).DetachFromDisposeScope();
            copy.copy_(p);
        }
    }

    public void Dispose()
    {
        foreach (var t in _best.Values) t.Dispose();
        _best.Clear();
    }
}
