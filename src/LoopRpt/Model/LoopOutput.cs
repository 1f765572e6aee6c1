using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// Per-loop results of a forward pass. Logits are not materialized: read them out for one step with
/// <see cref="OuroForCausalLM.Logits"/>, or gold-token log-probs with <see cref="OuroForCausalLM.GoldLogProbs"/>.
/// Tensors belong to the caller's dispose scope.
/// </summary>
public sealed class LoopOutput
{
    internal LoopOutput(IReadOnlyList<Tensor> hidden, Tensor gateLogits)
    {
        Hidden = hidden;
        GateLogits = gateLogits;
    }

    /// <summary>Final-normed hidden state after each loop t = 0..T-1, each (B, S, H).</summary>
    public IReadOnlyList<Tensor> Hidden { get; }

    /// <summary>Exit-gate logits, (B, S, T).</summary>
    public Tensor GateLogits { get; }

    public int Steps => Hidden.Count;

    /// <summary>Exit distribution p(t), (B, S, T), float32.</summary>
    public Tensor ExitProbabilities() => ExitDistribution.Probabilities(GateLogits);

    /// <summary>log p(t), (B, S, T), float32.</summary>
    public Tensor ExitLogProbabilities() => ExitDistribution.LogProbabilities(GateLogits);
}
