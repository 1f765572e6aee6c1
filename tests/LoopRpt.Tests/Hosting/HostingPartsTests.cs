using LoopRpt.Hosting;
using Microsoft.Extensions.Configuration;
using LoopRpt.Training;
using LoopRpt.Model;
using LoopRpt.Objectives;
using Microsoft.Extensions.Options;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Hosting;

[Collection("Hosting")]
public class HostingPartsTests
{
    /// <summary>Held-out loss and accuracy window by window with the core API (GoldLogProbsPerStep, QExitStep), one row at a time.</summary>
    private static (double Loss, double Accuracy, long Tokens) Independent(OuroForCausalLM lm, int[] tokens, int s, double? q)
    {
        using var noGrad = no_grad();
        double loss = 0, hits = 0;
        long n = 0;
        for (int start = 0; start + s + 1 <= tokens.Length; start += s)
        {
            using var scope = NewDisposeScope();
            var ids = tensor(tokens[start..(start + s)].Select(i => (long)i).ToArray(), [1, s]);
            var targets = tensor(tokens[(start + 1)..(start + s + 1)].Select(i => (long)i).ToArray(), [1, s]);
            var output = lm.Forward(ids);
            var perStep = lm.GoldLogProbsPerStep(output, targets);                                  // (1, S, T)
            var steps = q is { } qq ? ExitDistribution.QExitStep(output.ExitProbabilities(), qq)     // (1, S)
                                    : full([1, s], output.Steps - 1, dtype: ScalarType.Int64);
            var gold = perStep.gather(-1, steps.unsqueeze(-1)).squeeze(-1);
            loss -= gold.sum().item<float>();
            var logits = lm.LogitsAtSteps(output, steps);
            hits += logits.argmax(-1).eq(targets).sum().item<long>();
            n += s;
        }
        return (loss / n, hits / n, n);
    }

    [Theory]
    [InlineData(null)]
    [InlineData(0.5)]
    public void HeldOutMetricsMatchAWindowByWindowComputation(double? q)
    {
        using var lm = TestUtil.TinyModel(vocab: 64, seed: 3);
        var rng = new Random(4);
        var tokens = Enumerable.Range(0, 150).Select(_ => rng.Next(64)).ToArray();   // 9 windows of 16 (+1)
        var exit = q is { } v ? ExitMode.Q(v) : ExitMode.Last;
        var got = HeldOutEvaluator.Evaluate(lm, tokens, sequenceLength: 16, batchSize: 4, exit);
        var want = Independent(lm, tokens, 16, q);
        Assert.Equal(want.Tokens, got.Tokens);
        Assert.Equal(9 * 16, got.Tokens);
        Tolerance.AssertClose(want.Loss, got.Loss, absolute: 1e-4);
        Tolerance.AssertClose(want.Accuracy, got.Accuracy, absolute: 1e-9);
        // maxTokens caps whole windows.
        Assert.Equal(32, HeldOutEvaluator.Evaluate(lm, tokens, 16, 4, exit, maxTokens: 40).Tokens);
        Assert.Throws<ArgumentException>(() => HeldOutEvaluator.Evaluate(lm, tokens[..16], 16, 4, exit));
    }

    [Fact]
    public void DataFolderHoldsOutTheTailOfEveryFileAndSkipsTemporaries()
    {
        using var scratch = new Scratch();
        DataFolder.WriteTokens(Path.Combine(scratch.Data, "a.tokens"), Enumerable.Range(0, 20).ToArray());
        File.WriteAllText(Path.Combine(scratch.Data, "b.txt"), "héllo");                  // end-of-text (the start id) + 6 UTF-8 bytes
        File.WriteAllText(Path.Combine(scratch.Data, "c.txt.tmp"), "ignored");
        File.WriteAllText(Path.Combine(scratch.Data, ".hidden.txt"), "ignored");
        var tokenizer = new ByteTokenizerService();

        var (train, heldOut) = DataFolder.Load(scratch.Data, null, 0.25, tokenizer, vocabSize: 257);
        // a: 20 ids → 15 train + 5 held out; b: 7 ids → round(1.75) = 2 held out.
        int[] b = [256, 104, 195, 169, 108, 108, 111];      // DocumentTokens: [start] + ids; one shared id, so none after
        Assert.Equal(Enumerable.Range(0, 15).Concat(b[..5]), train);
        Assert.Equal(Enumerable.Range(15, 5).Concat(b[5..]), heldOut);
        Assert.Equal("héllo", tokenizer.Decode(b));

        var e = Assert.Throws<InvalidDataException>(() => DataFolder.Load(scratch.Data, null, 0.25, tokenizer, vocabSize: 200));
        Assert.Contains("b.txt", e.Message);
        Assert.Contains("token id 256", e.Message);
    }

    [Fact]
    public void TheKindRegistryBuildsBuiltInAndRegisteredKindsFromStageDefinitions()
    {
        // Hosting binds a stage into a StageDefinition; the registry (the one extension point) resolves it.
        GateObjectiveOptions? seen = null;
        var kinds = new ObjectiveKindRegistry().Add(new ObjectiveKind<GateObjectiveOptions>("custom", (o, _) => new GateObjective(seen = o)));
        Assert.Equal(["custom", "gate", "looprpt", "pretrain"], kinds.Names);
        var looprpt = new StageDefinition { Kind = "looprpt", Steps = 5, Parameters = new Dictionary<string, string> { ["Rollouts"] = "4", ["Noise"] = "dropout", ["Sigma"] = "0.2" } };
        using (var o = Assert.IsType<LoopRptObjective>(kinds.CreateObjective(looprpt)))
        {
            Assert.Equal(4, o.Options.Rollouts);
            Assert.Equal(NoiseKind.Dropout, o.Options.Noise);
            // bitwise: settings parsed from configuration text, not computed
            Assert.Equal(0.2, o.Options.Sigma);
            Assert.Equal(LoopRptObjectiveOptions.Defaults.KlCoef, o.Options.KlCoef);
        }
        Assert.Contains("Noise", Assert.Throws<ArgumentException>(() => kinds.CreateObjective(new StageDefinition { Kind = "looprpt", Steps = 1, Parameters = new Dictionary<string, string> { ["Noise"] = "pink" } })).Message);

        var pretrain = new StageDefinition { Kind = "PRETRAIN", Steps = 10, LearningRate = 3e-4, Parameters = new Dictionary<string, string> { ["beta"] = "0.2", ["LateBetaFrom"] = "1" } };
        // bitwise: the configured beta, returned as given
        using (var o = Assert.IsType<PretrainObjective>(kinds.CreateObjective(pretrain))) Assert.Equal(0.2, o.BetaAt(9));
        // bitwise: a parameter parsed from text, returned as given
        using (var o = kinds.CreateObjective(new StageDefinition { Kind = "custom", Steps = 1, Parameters = new Dictionary<string, string> { ["K"] = "3" } }))
            Assert.Equal(("gate", 3.0), (o.Name, seen!.K));

        var bad = Assert.Throws<ArgumentException>(() => kinds.CreateObjective(new StageDefinition { Kind = "gate", Steps = 1, Parameters = new Dictionary<string, string> { ["K"] = "fifty" } }));
        Assert.Contains("parameter 'K' must be a number; got 'fifty'", bad.Message);
        var stage = kinds.CreateStage(pretrain);
        using (stage.Objective)
        {
            Assert.Equal(10, stage.Steps);
            // bitwise: a setting read back as given, not computed
            Assert.Equal(3e-4, stage.LearningRate);
        }
    }

    [Fact]
    public void ConfigurationBindsStraightIntoTheCoreStageDefinition()
    {
        // The keys users write (stage-level optimizer settings, Parameters by name) land in the core type; absent ones stay null.
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Stages:0:Steps"] = "7",
            ["Stages:0:Beta2"] = "0.99",
            ["Stages:0:GradientAccumulation"] = "2",
            ["Stages:0:Parameters:beta"] = "0.2",
            ["Stages:1:Kind"] = "looprpt",
            ["Stages:1:Steps"] = "3",
        }).Build();
        var o = new RetrainingOptions();
        config.Bind(o);

        Assert.Equal(2, o.Stages.Count);
        var first = o.Stages[0];
        Assert.Equal((ObjectiveKindRegistry.Pretrain, 7L, 2), (first.Kind, first.Steps, first.GradientAccumulation));
        // bitwise: a setting parsed from configuration text, not computed
        Assert.Equal(0.99, first.Beta2);
        Assert.All(new[] { first.LearningRate, first.MinLearningRateRatio, first.WarmupFraction, first.WeightDecay, first.Beta1, first.GradientClip }, v => Assert.Null(v));
        Assert.Equal("0.2", Assert.Single(first.Parameters!).Value);
        Assert.Null(first.ObjectiveOptions);

        var kinds = new ObjectiveKindRegistry();
        using (var pretrain = Assert.IsType<PretrainObjective>(kinds.CreateObjective(first)))
            Assert.Equal(0.2, pretrain.BetaAt(0));                // bitwise: the configured beta, returned as given
        var looprpt = kinds.CreateStage(o.Stages[1]);
        using (looprpt.Objective)
            Assert.Equal(OptimizerDefaults.LoopRpt.LearningRate, looprpt.LearningRate);   // bitwise: the table's value, copied
    }
}
