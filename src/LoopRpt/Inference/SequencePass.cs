using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// The compute-saving pass over whole right-padded sequences that <see cref="AdaptiveExitScorer"/> and
/// <see cref="ExitStateEmbedder"/> share: the exit rule checked against the model once, then every batch run from
/// position 0 by <see cref="AdaptiveLoopRunner"/> through a fresh rolling KV cache.
/// </summary>
internal sealed class SequencePass
{
    private readonly ExitRule _rule;

    /// <exception cref="ArgumentOutOfRangeException">The exit rule is expected logits or a fixed step beyond the model's
    /// loops, or <paramref name="batchSize"/> is below 1 (reported against <paramref name="paramName"/>).</exception>
    /// <exception cref="ArgumentNullException"><paramref name="lm"/> is null.</exception>
    public SequencePass(OuroForCausalLM lm, ExitMode? exit, int batchSize, string paramName)
    {
        Model = lm ?? throw new ArgumentNullException(nameof(lm));
        if (batchSize < 1)
            throw new ArgumentOutOfRangeException(paramName, batchSize, "BatchSize must be at least 1.");
        _rule = ExitRule.From(exit, lm.Config, paramName);
        Runner = new AdaptiveLoopRunner(lm);
    }

    /// <summary>The model (only read).</summary>
    public OuroForCausalLM Model { get; }

    /// <summary>The runner (its test hooks).</summary>
    public AdaptiveLoopRunner Runner { get; }

    /// <summary>
    /// Runs token ids (B, S) on the model's device; <paramref name="valid"/> (B, S) marks the tokens to compute (null:
    /// all). Call under no_grad, inside the caller's dispose scope.
    /// </summary>
    public ChunkResult Run(Tensor ids, Tensor? valid)
    {
        var config = Model.Config;
        using var cache = new LoopKvCache(ids.shape[0], ids.shape[1], config.TotalUtSteps, config.NumHiddenLayers,
            config.NumKeyValueHeads, config.HeadDim, rolling: true, Model.Device, Model.ComputeType);
        return Runner.Run(ids, valid, cache, _rule);
    }
}
