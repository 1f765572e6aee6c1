using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Tests;

internal static class TestUtil
{
    static TestUtil() => TorchNative.EnsureLoaded();

    /// <summary>A tiny model with a fixed seed; deterministic weights.</summary>
    public static OuroForCausalLM TinyModel(int loops = 4, int vocab = 64, long seed = 1, bool tie = false, int kvHeads = 2)
    {
        TorchNative.EnsureLoaded();
        var c = new OuroConfig
        {
            VocabSize = vocab, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4,
            NumKeyValueHeads = kvHeads, TotalUtSteps = loops, RopeTheta = 10000, MaxPositionEmbeddings = 256, TieWordEmbeddings = tie,
        };
        using var g = new Generator((ulong)seed);
        return new OuroForCausalLM(c, generator: g);
    }

    public static Tensor RandomIds(long b, long s, int vocab, long seed)
    {
        using var g = new Generator((ulong)seed);
        return randint(0, vocab, [b, s], dtype: ScalarType.Int64, generator: g);
    }

    /// <summary>Same shape and bitwise-equal values.</summary>
    public static bool BitEqual(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static float[] ToArray(Tensor t) => t.to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
}
