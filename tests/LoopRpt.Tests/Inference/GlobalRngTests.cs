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

    /// <summary>
    /// Issue 20: loading a model directory draws no Ouro initial weights (the load overwrites every parameter). TorchSharp's
    /// module constructors still draw their own default init from the global RNG, so the check is differential: a load
    /// advances the global RNG exactly as far as constructing the model without initialization does (the old loader also
    /// drew a normal for every matrix), and the loaded weights equal the saved ones.
    /// </summary>
    [Fact]
    public void LoadingDrawsNoInitialWeights()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var dir = Path.Combine(Path.GetTempPath(), "looprpt-load-" + Guid.NewGuid().ToString("N"));
        try
        {
            LoopRpt.Checkpoints.ModelDirectory.Save(dir, lm, new LoopRpt.Checkpoints.ModelMeta());
            manual_seed(321);
            using (new OuroForCausalLM(lm.Config, initialize: false)) { }
            var expected = rand(3);
            manual_seed(321);
            using var loaded = LoopRpt.Checkpoints.ModelDirectory.Load(dir).Model;
            Assert.True(Same(expected, rand(3)), "loading must draw nothing beyond the module constructors' own init");
            manual_seed(321);
            using var hf = LoopRpt.Interop.OuroCheckpoint.Load(dir);
            Assert.True(Same(expected, rand(3)), "loading must draw nothing beyond the module constructors' own init");
            var saved = lm.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in loaded.named_parameters()) Assert.True(Same(saved[name], p), name);
            foreach (var (name, p) in hf.Model.named_parameters()) Assert.True(Same(saved[name], p), name);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
