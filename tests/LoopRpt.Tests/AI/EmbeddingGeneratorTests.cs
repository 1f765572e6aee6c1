using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Model;
using Microsoft.Extensions.AI;
using static TorchSharp.torch;

namespace LoopRpt.Tests.AI;

public class EmbeddingGeneratorTests
{
    /// <summary>Independent reference: full forward, per-token states at the given loop steps, mean, unit norm.</summary>
    private static float[] Pooled(OuroForCausalLM lm, long[] ids, Func<LoopOutput, long[]> steps)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var o = lm.Forward(tensor(ids, [1, ids.Length]));
        var chosen = steps(o);
        var sum = new double[lm.Config.HiddenSize];
        for (int i = 0; i < ids.Length; i++)
        {
            var state = TestUtil.ToArray(o.Hidden[(int)chosen[i]][0, i]);
            for (int k = 0; k < sum.Length; k++) sum[k] += state[k];
        }
        var mean = sum.Select(x => x / ids.Length).ToArray();
        double norm = Math.Sqrt(mean.Sum(x => x * x));
        return mean.Select(x => (float)(x / norm)).ToArray();
    }

    [Fact]
    public async Task FullDepthEmbeddingIsTheNormalizedMeanOfLastLoopStates()
    {
        using var model = AiTestSupport.Model();
        using var generator = new LoopRptEmbeddingGenerator(model, new LoopRptEmbeddingGeneratorOptions { ExitThreshold = 1.0, BatchSize = 2 });
        string[] texts = ["hello world", "a", "looped models think twice", "abc abc"];   // unequal lengths: padding in a batch
        var result = await generator.GenerateAsync(texts);
        Assert.Equal(texts.Length, result.Count);
        for (int i = 0; i < texts.Length; i++)
        {
            var ids = model.Codec.Ids(texts[i]);
            var expected = Pooled(model.Model, ids, o => Enumerable.Repeat(3L, ids.Length).ToArray());
            var actual = result[i].Vector.ToArray();
            Assert.Equal(32, actual.Length);
            for (int k = 0; k < expected.Length; k++) Assert.True(Math.Abs(expected[k] - actual[k]) < 1e-5, $"text {i} dim {k}: {expected[k]} vs {actual[k]}");
        }
        Assert.Equal(texts.Sum(t => t.Length + 1), result.Usage!.InputTokenCount);        // the start id, then one id per letter
        Assert.Equal(4L * texts.Sum(t => t.Length + 1), result.Usage.AdditionalCounts![LoopRptChatClient.LoopsKey]);
    }

    [Fact]
    public async Task AdaptiveExitPoolsEachTokensExitState()
    {
        // One-token texts: no earlier token whose frozen keys/values could differ, so "compute all loops, then take
        // the Q-exit step" is an exact reference for the compute-saving pass.
        using var model = AiTestSupport.Model();
        var options = new EmbeddingGenerationOptions { AdditionalProperties = new() { [LoopRptChatClient.ExitThresholdKey] = 0.5 } };
        using var generator = new LoopRptEmbeddingGenerator(model, new LoopRptEmbeddingGeneratorOptions { AddBos = false });   // one token each
        string[] texts = [.. "abcdefghij".Select(c => c.ToString())];
        var result = await generator.GenerateAsync(texts, options);
        long loops = 0;
        var steps = new HashSet<long>();
        for (int i = 0; i < texts.Length; i++)
        {
            var ids = model.Codec.Encode(texts[i]).Select(id => (long)id).ToArray();
            long[] step = [];
            var expected = Pooled(model.Model, ids, o => step = Inference.InferenceTestUtil.Longs(ExitMode.Q(0.5).Steps(o.ExitProbabilities())[0]));
            loops += step[0] + 1;
            steps.Add(step[0]);
            var actual = result[i].Vector.ToArray();
            for (int k = 0; k < expected.Length; k++) Assert.True(Math.Abs(expected[k] - actual[k]) < 1e-5, $"text {i} dim {k}");
        }
        Assert.True(steps.Count > 1, "the exit steps should differ between tokens for this test to mean anything");
        Assert.Equal(loops, result.Usage!.AdditionalCounts![LoopRptChatClient.LoopsKey]);
    }

    [Fact]
    public async Task BadInputsFailClearly()
    {
        using var model = AiTestSupport.Model();
        using var generator = new LoopRptEmbeddingGenerator(model);
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => generator.GenerateAsync(["abc"], new EmbeddingGenerationOptions { Dimensions = 16 }));
        Assert.Contains("32", e.Message);
        await Assert.ThrowsAsync<ArgumentException>(() => generator.GenerateAsync(["abc", ""]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ExitStateEmbedder(model.Model, new ExitStateEmbedderOptions { BatchSize = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ExitStateEmbedder(model.Model).Embed([new long[] { 1, 99 }]));
    }
}
