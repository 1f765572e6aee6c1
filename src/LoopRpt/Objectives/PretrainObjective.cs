using TorchSharp;
using LoopRpt.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Objectives;

/// <summary>Options of Ouro's Stage I objective (docs/method.md §3.1).</summary>
public sealed class PretrainObjectiveOptions
{
    public static class Defaults
    {
        public const double Beta = 0.1;
        public const double LateBeta = 0.05;
        public const double LateBetaFrom = 0.5;
    }

    /// <summary>Weight beta of the exit-entropy regularizer early in training. Default 0.1 (published).</summary>
    public double Beta { get; set; } = Defaults.Beta;

    /// <summary>beta used later in training. Default 0.05 (published).</summary>
    public double LateBeta { get; set; } = Defaults.LateBeta;

    /// <summary>Fraction of the stage's steps after which <see cref="LateBeta"/> applies. Default 0.5; 1 disables the switch.</summary>
    public double LateBetaFrom { get; set; } = Defaults.LateBetaFrom;

    /// <summary>A copy (the objective keeps its own, so later edits of the caller's options do not leak in).</summary>
    public PretrainObjectiveOptions Clone() => (PretrainObjectiveOptions)MemberwiseClone();

    internal void Validate()
    {
        if (!(Beta >= 0)) throw new ArgumentOutOfRangeException(nameof(Beta), Beta, "Beta must be non-negative.");
        if (!(LateBeta >= 0)) throw new ArgumentOutOfRangeException(nameof(LateBeta), LateBeta, "LateBeta must be non-negative.");
        if (!(LateBetaFrom is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(LateBetaFrom), LateBetaFrom, "LateBetaFrom must lie in [0, 1].");
    }
}

/// <summary>
/// Ouro Stage I: L = sum_t p(t) L_t - beta H(p), per token, averaged over real target tokens (docs/method.md §3.1).
/// L_t is the next-token cross-entropy when reading out after loop t.
/// </summary>
public sealed class PretrainObjective : ITrainingObjective
{
    private readonly PretrainObjectiveOptions _options;
    private long _stageSteps;

    /// <summary>
    /// Creates the objective; the options are copied and validated. The stage's length, which places the β switch
    /// (<see cref="PretrainObjectiveOptions.LateBetaFrom"/>), is not given here: the trainer hands it over
    /// (<see cref="BeginStage"/>) from <see cref="Training.TrainingStage.Steps"/>.
    /// </summary>
    public PretrainObjective(PretrainObjectiveOptions? options = null)
    {
        _options = (options ?? new PretrainObjectiveOptions()).Clone();
        _options.Validate();
    }

    public string Name => "pretrain";

    /// <summary>A copy of the options in use.</summary>
    public PretrainObjectiveOptions Options => _options.Clone();

    /// <summary>The length of the stage the trainer last began (<see cref="BeginStage"/>); 0 before, which keeps β at <see cref="PretrainObjectiveOptions.Beta"/>.</summary>
    public long StageSteps => _stageSteps;

    /// <summary>Takes the stage's length from the trainer: β switches at <see cref="PretrainObjectiveOptions.LateBetaFrom"/> × <paramref name="stageSteps"/>.</summary>
    public void BeginStage(long stageSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(stageSteps);
        _stageSteps = stageSteps;
    }

    /// <summary>β at a 0-based step of the stage the trainer began (<see cref="BetaAt(long, long)"/> with <see cref="StageSteps"/>).</summary>
    public double BetaAt(long stageStep) => BetaAt(stageStep, _stageSteps);

    /// <summary>
    /// β at a 0-based step of a stage of <paramref name="stageSteps"/> steps (the stage's step, not the global one: a stage
    /// after others, or one continuing a trained model, starts early): <see cref="PretrainObjectiveOptions.LateBeta"/> from
    /// step <see cref="PretrainObjectiveOptions.LateBetaFrom"/> × <paramref name="stageSteps"/> on, unless LateBetaFrom is 1
    /// or the length is unknown (0).
    /// </summary>
    public double BetaAt(long stageStep, long stageSteps)
        => stageSteps > 0 && _options.LateBetaFrom < 1 && stageStep >= _options.LateBetaFrom * stageSteps ? _options.LateBeta : _options.Beta;

    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters(OuroForCausalLM lm) => lm.UniqueParameters();

    public void Attach(OuroForCausalLM lm) { }

    public ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep)
    {
        var output = lm.Forward(inputs);
        var stepLoss = -lm.GoldLogProbsPerStep(output, targets);          // (B, S, T)
        return Loss(stepLoss, output.GateLogits, targets, BetaAt(stageStep));
    }

    /// <summary>The Stage I loss from per-step losses (B, S, T) and gate logits (B, S, T); exposed for tests.</summary>
    public static ObjectiveOutput Loss(Tensor stepLoss, Tensor gateLogits, Tensor targets, double beta)
    {
        var mask = Masked.TargetMask(targets);                              // (B, S)
        var logP = ExitDistribution.LogProbabilities(gateLogits);           // (B, S, T)
        var p = logP.exp();
        var entropy = -(p * logP).sum(-1);                                  // H(p), (B, S)
        using Scalar b = beta;                                             // held for the call (docs/platform.md §2)
        var perToken = (p * stepLoss).sum(-1) - entropy.mul(b);
        var loss = Masked.MeanOverTokens(perToken, mask);
        using var noGrad = no_grad();
        var metrics = new Dictionary<string, Tensor>
        {
            ["loss"] = loss.detach(),
            ["step_loss"] = Masked.MeanOverTokens(stepLoss.detach(), mask),           // (T)
            ["exit_entropy"] = Masked.MeanOverTokens(entropy.detach(), mask),
            ["expected_exit_step"] = Masked.MeanOverTokens(ExitDistribution.ExpectedExitStep(p.detach()), mask),
            ["beta"] = full([], b, dtype: ScalarType.Float32, device: loss.device),
        };
        return new ObjectiveOutput(loss, metrics);
    }

    public void AfterOptimizerStep(OuroForCausalLM lm, long step) { }

    public IEnumerable<(string Name, Tensor Tensor)> StateTensors() => [];

    public void LoadState(Func<string, Tensor, bool> copyInto) { }

    public void Dispose() { }
}
