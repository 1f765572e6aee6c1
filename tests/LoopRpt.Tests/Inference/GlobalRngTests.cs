using LoopRpt.Inference;
using LoopRpt.Model;
using static LoopRpt.Tests.Inference.InferenceTestUtil;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Inference;

/// <summary>
/// Tests that read or reset process-wide state run alone, after the parallel tests: the torch RNG (no other test may
/// draw from the global generator between their seed and their check, and they must not reseed another test's) and the
/// inference meter (no other test's generation may count).
/// </summary>
[CollectionDefinition("ProcessWide", DisableParallelization = true)]
public sealed class ProcessWideCollection;

[Collection("ProcessWide")]
public class GlobalRngTests
{
    [Fact]
    public void SamplingIsSeededAndLeavesTheGlobalGeneratorAlone()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        GenerationOptions Options(ulong seed) => new() { MaxNewTokens = 20, Temperature = 1.5, TopP = 0.95, Seed = seed, Exit = ExitMode.Q(0.6) };

        manual_seed(123);
        var expected = rand(3);
        manual_seed(123);
        var a = generator.Generate(Prompt, Options(7));
        Assert.True(Same(expected, rand(3)), "generation must not draw from the global RNG");
        var b = generator.Generate(Prompt, Options(7));
        var c = generator.Generate(Prompt, Options(8));
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.NotEqual(a.Tokens, c.Tokens);
    }
}
