using LoopRpt.Inference;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>
/// How much key/value memory a generation holds (issue 28, docs/benchmarks.md "Prefill memory"): the first prompts are
/// prefilled straight into the batch's cache, so a generation holds one cache of B rows × (longest prompt + new tokens)
/// positions × every loop and layer; a scratch cache exists only for prompts that join later, sized to them. Before,
/// the first prefill ran on a scratch cache of its own and was then copied: two caches at once (0.8 GB each for a
/// 512-token prompt of the 1.4B model in float32).
/// </summary>
public class PrefillMemoryTests
{
    private static long SlotBytes(LoopRpt.Model.OuroForCausalLM lm)    // one position of one row in every (loop, layer) slot, keys and values
        => 2L * lm.Config.NumHiddenLayers * lm.Config.TotalUtSteps * lm.Config.NumKeyValueHeads * lm.Config.HeadDim * sizeof(float);

    [Fact]
    public void OnePromptHoldsOneCacheOfItsPromptAndNewTokens()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        long[] prompt = Enumerable.Range(1, 20).Select(i => (long)(i * 3 % 64)).ToArray();
        long before = LoopKvCache.LiveBytesOnThisThread;
        LoopKvCache.PeakBytesOnThisThread = before;
        var result = new LoopedGenerator(lm).Generate(prompt, new GenerationOptions { MaxNewTokens = 5, Temperature = 0, StopTokens = [] });
        Assert.Equal(5, result.Tokens.Length);
        Assert.Equal(SlotBytes(lm) * 1 * (20 + 5), LoopKvCache.PeakBytesOnThisThread - before);
        Assert.Equal(before, LoopKvCache.LiveBytesOnThisThread);
    }

    /// <summary>Three prompts on two rows: the batch cache (2 rows × (9 + 3) positions) and, when a row frees, a scratch
    /// cache for the third prompt alone (1 row × 4 positions) — never a second cache for the first two.</summary>
    [Fact]
    public void ALaterPromptAddsOnlyAScratchCacheOfItsOwnSize()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        long[][] prompts = [[5, 9, 2, 7, 1, 3], [4, 8, 15, 16, 23, 42, 11, 12, 13], [6, 1, 6, 1]];
        long before = LoopKvCache.LiveBytesOnThisThread;
        LoopKvCache.PeakBytesOnThisThread = before;
        var results = new LoopedGenerator(lm).GenerateBatch(prompts, new GenerationOptions { MaxNewTokens = 3, Temperature = 0, BatchSize = 2, StopTokens = [] });
        Assert.All(results, r => Assert.Equal(3, r.Tokens.Length));
        Assert.Equal(SlotBytes(lm) * (2 * (9 + 3) + 1 * 4), LoopKvCache.PeakBytesOnThisThread - before);
        Assert.Equal(before, LoopKvCache.LiveBytesOnThisThread);
    }
}
