using LoopRpt.MLNet;
using LoopRpt.Model;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

public class EndToEndPipelineTests
{
    [Fact]
    public void TextToScoresToMetricsToZipAndBack()
    {
        var work = MlNetTestData.TempDir("e2e");
        Directory.CreateDirectory(work);
        try
        {
            var corpus = Path.Combine(work, "corpus.tsv");
            File.WriteAllLines(corpus, ["Text", .. MlNetTestData.Docs(120, 1).Select(d => d.Text)]);
            var testDocs = MlNetTestData.Docs(10, 2);
            testDocs.Add(new Doc { Text = "" });

            var ml = new MLContext(seed: 1);
            IDataView data = ml.Data.LoadFromTextFile<Doc>(corpus, hasHeader: true);
            var pipeline = ml.Transforms.Text.NormalizeText("Text")
                .Append(ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 300))
                .Append(ml.LoopRpt().TrainLoopedLm(new LoopedLmTrainerEstimator.Options
                {
                    Config = MlNetTestData.TinyConfig(1), BatchSize = 4, SequenceLength = 32, Seed = 1, LogEvery = 5,
                    Stages = [StageDescriptor.Pretrain(12, 1e-2), StageDescriptor.Gate(3, 1e-2)],
                    ModelDirectory = Path.Combine(work, "model"),
                    Scorer = new AdaptiveExitScoringTransformer.Options { ExitMode = ExitMode.Q(0.6), Storage = ModelStorage.Embedded, PerStepStatistics = true },
                }));
            using var model = pipeline.Fit(data);
            var scorer = model.LastTransformer;
            Assert.Equal(300, scorer.Config.VocabSize);                    // sized from the tokenizer fitted in the same pipeline
            Assert.Equal("TrainedBpe", scorer.Meta.Tokenizer!["kind"]!.GetValue<string>());
            Assert.True(File.Exists(Path.Combine(work, "model", "model.safetensors")));

            var test = ml.Data.LoadFromEnumerable(testDocs);
            var scored = model.Transform(test);
            var metrics = ml.LoopRpt().Evaluate(scored);
            Assert.Equal(11, metrics.Rows);
            Assert.InRange(metrics.MeanExitStep, 1, 3);
            Assert.Equal(3, metrics.StepAccuracy.Length);
            var ll = scored.GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
            Assert.Equal(0f, ll[^1]);                                          // bitwise: empty text, BOS only → no predicted token, the constant 0
            Assert.All(ll[..^1], v => Assert.True(v < 0));

            var zip = Path.Combine(work, "model.zip");
            ml.Model.Save(model, data.Schema, zip);
            var engine = ml.Model.CreatePredictionEngine<Doc, Scored>(model);
            var p0 = engine.Predict(testDocs[0]);
            Tolerance.AssertClose(ll[0], p0.LogLikelihood);                    // one row vs a batch: other shapes

            ScorerWorkoutTests.StateCacheReset();
            var ml2 = new MLContext(seed: 9);
            var loaded = ml2.Model.Load(zip, out var inputSchema);
            Assert.NotNull(inputSchema.GetColumnOrNull("Text"));
            var ll2 = loaded.Transform(ml2.Data.LoadFromEnumerable(testDocs)).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
            Tolerance.AssertClose(ll, ll2, "after save → load");                // the reloaded twin scores row by row: other shapes
            // bitwise: both one row through the same engine: the same computation
            Assert.Equal(p0.TokenLogProbabilities, ml2.Model.CreatePredictionEngine<Doc, Scored>(loaded).Predict(testDocs[0]).TokenLogProbabilities);
            (loaded as IDisposable)?.Dispose();
        }
        finally
        {
            MlNetTestData.Delete(work);
        }
    }
}
