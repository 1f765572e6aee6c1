using LoopRpt.Checkpoints;
using LoopRpt.Evaluation;
using LoopRpt.Inference;
using LoopRpt.MLNet;
using LoopRpt.Model;
using LoopRpt.Tests.MLNet;
using LoopRpt.Tests.Training;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Inference;

/// <summary>
/// A model whose weights are NaN (or whose activations overflow) is refused by every scoring surface of the library with
/// a <see cref="NotFiniteNumberException"/> that says why, instead of NaN scores or argmax garbage.
/// </summary>
public sealed class NonFiniteOutputTests
{
    private const int Vocab = 32;

    /// <summary>A tiny model with one weight tensor filled with <paramref name="value"/> (null: none).</summary>
    private static OuroForCausalLM Model(string? tensor = "model.layers.0.mlp.down_proj.weight", float value = float.NaN)
    {
        var lm = TestUtil.TinyModel(vocab: Vocab, seed: 3);
        if (tensor is not null)
            using (no_grad()) lm.UniqueParameters().Single(p => p.Name == tensor).Param.fill_(value);
        return lm;
    }

    private static List<IReadOnlyList<long>> Sequences()
    {
        var tokens = TrainerTests.PatternTokens(400, Vocab, 1);
        return Enumerable.Range(0, 4).Select(i => (IReadOnlyList<long>)tokens.Skip(i * 24).Take(24).Select(t => (long)t).ToArray()).ToList();
    }

    [Fact]
    public void NonFiniteParametersAreNamed()
    {
        using var good = Model(tensor: null);
        Assert.Empty(NonFiniteCheck.Parameters(good));
        using var bad = Model();
        Assert.Equal(["model.layers.0.mlp.down_proj.weight"], NonFiniteCheck.Parameters(bad));
        using var inf = Model("model.early_exit_gate.bias", float.PositiveInfinity);
        Assert.Equal(["model.early_exit_gate.bias"], NonFiniteCheck.Parameters(inf));
    }

    [Fact]
    public void TheAdaptiveExitScorerRefusesNaNWeights()
    {
        using var good = Model(tensor: null);
        var summary = new AdaptiveExitScorer(good, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.5) }).Evaluate(Sequences());
        Assert.True(double.IsFinite(summary.MeanNll));

        using var lm = Model();
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.5) });
        var e = Assert.Throws<NotFiniteNumberException>(() => scorer.Evaluate(Sequences()));
        Assert.Contains("log-probabilities are not finite", e.Message);
        Assert.Contains("model.layers.0.mlp.down_proj.weight", e.Message);
        var (ids, lengths) = AdaptiveExitScorer.Pad(Sequences());
        Assert.Throws<NotFiniteNumberException>(() => scorer.Score(ids, lengths));
    }

    [Fact]
    public void ActivationsThatOverflowAreRefusedWithFiniteWeights()
    {
        using var lm = Model("lm_head.weight", 3e38f);                   // finite, but the logits overflow to ±Inf
        Assert.Empty(NonFiniteCheck.Parameters(lm));
        var e = Assert.Throws<NotFiniteNumberException>(() => new AdaptiveExitScorer(lm).Evaluate(Sequences()));
        Assert.Contains("weights are finite, so an activation overflowed", e.Message);
    }

    [Fact]
    public void TheEvaluatorRefusesNaNWeightsInTheModelOrTheBaseModel()
    {
        var windows = LoopEvaluator.Windows(TrainerTests.PatternTokens(400, Vocab, 1), 4, 16).ToList();
        using var good = Model(tensor: null);
        Assert.True(new LoopEvaluator().Evaluate(good, windows).Buckets[0].Tokens > 0);
        using var lm = Model();
        var e = Assert.Throws<NotFiniteNumberException>(() => new LoopEvaluator().Evaluate(lm, windows));
        Assert.Contains("logits or exit probabilities", e.Message);
        // The gate alone: argmax accuracies would look normal, the exit distribution is NaN.
        using var gate = Model("model.early_exit_gate.weight");
        Assert.Throws<NotFiniteNumberException>(() => new LoopEvaluator().Evaluate(gate, windows));
        var b = Assert.Throws<NotFiniteNumberException>(() => new LoopEvaluator().Evaluate(good, windows, baseModel: lm));
        Assert.Contains("entropies", b.Message);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.8)]
    public void GenerationRefusesNaNLogits(double temperature)
    {
        using var good = Model(tensor: null);
        var options = new GenerationOptions { MaxNewTokens = 4, Temperature = temperature, Exit = ExitMode.Q(0.5) };
        Assert.Equal(4, new LoopedGenerator(good).Generate([1, 2, 3], options).Tokens.Length);
        using var lm = Model();
        var e = Assert.Throws<NotFiniteNumberException>(() => new LoopedGenerator(lm).Generate([1, 2, 3], options));
        Assert.Contains("next-token logits", e.Message);
        Assert.Throws<NotFiniteNumberException>(() => new LoopedGenerator(lm).GenerateBatch([[1, 2, 3], [4, 5]], options));
    }

    [Fact]
    public void TheMlNetScorerRefusesNaNWeights()
    {
        var dir = MlNetTestData.TempDir("nan-model");
        try
        {
            using (var lm = new OuroForCausalLM(MlNetTestData.TinyConfig(50), generator: new Generator(5)))
            {
                using (no_grad()) lm.UniqueParameters().Single(p => p.Name == "model.norm.weight").Param.fill_(float.NaN);
                ModelDirectory.Save(dir, lm, new ModelMeta());
            }
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(6, 50, 3));
            foreach (var perStep in new[] { false, true })
            {
                using var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Q(0.5), PerStepStatistics = perStep }).Fit(data);
                var e = Assert.Throws<NotFiniteNumberException>(() => scorer.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray());
                Assert.Contains("model.norm.weight", e.Message);
            }
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }
}
