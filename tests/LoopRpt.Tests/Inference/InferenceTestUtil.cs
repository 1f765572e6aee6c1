using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Tests.Inference;

internal static class InferenceTestUtil
{
    /// <summary>The generation tests' default prompt.</summary>
    public static readonly long[] Prompt = [3, 17, 42, 8, 25];

    /// <summary>A tiny model whose exit gate is sharpened so Q-exit steps spread over the loops.</summary>
    public static OuroForCausalLM SpreadGateModel(double gateScale = 40, double gateBias = 0, long seed = 1, int loops = 4)
    {
        var lm = TestUtil.TinyModel(loops: loops, seed: seed);
        using var noGrad = no_grad();
        // Matrices redrawn from a local generator (written when the model's own init still drew from the global RNG;
        // kept so the tests' spread of exit steps stays the one they were designed on).
        using var g = new Generator((ulong)seed);
        foreach (var (name, p) in lm.named_parameters())
            if (p.dim() == 2) p.copy_(randn(p.shape, generator: g) * lm.Config.InitializerRange);
        lm.Backbone.early_exit_gate.weight!.mul_(gateScale);
        lm.Backbone.early_exit_gate.bias!.fill_(gateBias);
        return lm;
    }

    /// <summary>Reference "compute all, then select": gold log-probs (B, S) and steps (B, S) from the full-depth forward.</summary>
    public static (Tensor GoldLogProbs, Tensor Steps, Tensor Argmax) Reference(OuroForCausalLM lm, Tensor ids, ExitMode mode, Tensor targets)
    {
        using var noGrad = no_grad();
        var o = lm.Forward(ids);
        var steps = mode.Steps(o.ExitProbabilities());
        var logp = F.log_softmax(lm.LogitsAtSteps(o, steps).to_type(ScalarType.Float32), -1);
        var gold = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (targets >= 0).to_type(ScalarType.Float32);
        return (gold, steps, logp.argmax(-1));
    }

    public static Tensor Shifted(Tensor ids)
    {
        long b = ids.shape[0], s = ids.shape[1];
        return cat([ids.narrow(1, 1, s - 1), full([b, 1], -1L, dtype: ScalarType.Int64)], 1);
    }

    /// <summary>Same shape and bitwise-equal values.</summary>
    public static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && (a == b).all().item<bool>();

    public static long[] Longs(Tensor t) => t.to_type(ScalarType.Int64).cpu().contiguous().data<long>().ToArray();
}
