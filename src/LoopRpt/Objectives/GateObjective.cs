using TorchSharp;
using LoopRpt.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Objectives;

/// <summary>Options of Ouro's Stage II gate training (docs/method.md §3.2).</summary>
public sealed class GateObjectiveOptions
{
    public static class Defaults
    {
        public const double K = 50;
        public const double Gamma = 0.005;
    }

    /// <summary>Slope k of the soft continue label. Default 50 (published).</summary>
    public double K { get; set; } = Defaults.K;

    /// <summary>Improvement threshold gamma (nats). Default 0.005 (published).</summary>
    public double Gamma { get; set; } = Defaults.Gamma;

    /// <summary>A copy (the objective keeps its own, so later edits of the caller's options do not leak in).</summary>
    public GateObjectiveOptions Clone() => (GateObjectiveOptions)MemberwiseClone();

    internal void Validate()
    {
        if (!(K > 0)) throw new ArgumentOutOfRangeException(nameof(K), K, "K must be positive.");
        if (!(Gamma >= 0)) throw new ArgumentOutOfRangeException(nameof(Gamma), Gamma, "Gamma must be non-negative.");
    }
}

/// <summary>
/// Ouro Stage II: only the exit gate trains, the LM is frozen. With detached improvements I_t = max(0, L_{t-1} - L_t)
/// and soft continue labels w_t = sigmoid(k (I_t - gamma)), the loss is BCE(1 - lambda_t, w_t) averaged over
/// t = 1..T-1 and real tokens (docs/method.md §3.2).
/// </summary>
public sealed class GateObjective : ITrainingObjective
{
    private readonly GateObjectiveOptions _options;

    /// <summary>Creates the objective; the options are copied and validated.</summary>
    public GateObjective(GateObjectiveOptions? options = null)
    {
        _options = (options ?? new GateObjectiveOptions()).Clone();
        _options.Validate();
    }

    public string Name => "gate";

    /// <summary>A copy of the options in use.</summary>
    public GateObjectiveOptions Options => _options.Clone();

    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters(OuroForCausalLM lm)
        => lm.UniqueParameters().Where(p => p.Name.StartsWith("model.early_exit_gate.", StringComparison.Ordinal)).ToList();

    public void Attach(OuroForCausalLM lm) { }

    public ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep)
    {
        LoopOutput output;
        Tensor stepLoss;
        using (no_grad())
        {
            output = lm.Forward(inputs);                                    // backbone frozen: no graph
            stepLoss = -lm.GoldLogProbsPerStep(output, targets);            // (B, S, T)
        }
        var gate = lm.Backbone.early_exit_gate;
        var gateLogits = cat(output.Hidden.Select(h => gate.forward(h)).ToArray(), -1);   // (B, S, T), with grad
        return Loss(stepLoss, gateLogits, targets, _options.K, _options.Gamma);
    }

    /// <summary>The Stage II loss from per-step losses (B, S, T) and gate logits (B, S, T); exposed for tests.</summary>
    public static ObjectiveOutput Loss(Tensor stepLoss, Tensor gateLogits, Tensor targets, double k, double gamma)
    {
        long T = gateLogits.shape[^1];
        var mask = Masked.TargetMask(targets);
        if (T < 2)
        {
            var zero = gateLogits.sum().mul(Held.Zero).to_type(ScalarType.Float32);
            return new ObjectiveOutput(zero, new Dictionary<string, Tensor> { ["loss"] = zero.detach() });
        }
        var l = stepLoss.detach();
        var improvement = (l.narrow(-1, 0, T - 1) - l.narrow(-1, 1, T - 1)).clamp_min(Held.Zero);   // I_t, t = 1..T-1
        using Scalar kScalar = k, gammaScalar = gamma;                                       // held for the call (docs/platform.md §2)
        var w = F.sigmoid(improvement.sub(gammaScalar).mul(kScalar));                        // soft continue label
        var g = gateLogits.narrow(-1, 1, T - 1).to_type(ScalarType.Float32);                 // gate at t = 1..T-1
        // BCE(c, w) with c = 1 - lambda = sigmoid(-g): -(w log c + (1 - w) log(1 - c)), in log-sigmoid form.
        var bce = -(w * F.logsigmoid(-g)).add(w.neg().add(Held.One, Held.One) * F.logsigmoid(g), Held.One);   // (B, S, T-1)
        var loss = Masked.MeanOverTokens(bce.mean([-1L]), mask);
        using var noGrad = no_grad();
        var metrics = new Dictionary<string, Tensor>
        {
            ["loss"] = loss.detach(),
            ["step_loss"] = Masked.MeanOverTokens(l, mask),
            ["continue_label"] = Masked.MeanOverTokens(w, mask),                                       // (T-1)
            ["expected_exit_step"] = Masked.MeanOverTokens(ExitDistribution.ExpectedExitStep(ExitDistribution.Probabilities(gateLogits.detach())), mask),
        };
        return new ObjectiveOutput(loss, metrics);
    }

    public void AfterOptimizerStep(OuroForCausalLM lm, long step) { }

    public IEnumerable<(string Name, Tensor Tensor)> StateTensors() => [];

    public void LoadState(Func<string, Tensor, bool> copyInto) { }

    public void Dispose() { }
}
