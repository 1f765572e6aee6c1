using System.Diagnostics;
using LoopRpt.MLNet;
using Microsoft.ML;
using Xunit.Abstractions;
using ModelBuilderStyle;

namespace LoopRpt.Tests.ModelBuilderStyle;

/// <summary>
/// Issue 8: the Model Builder-style example (examples/ModelBuilderStyle) builds, trains a tiny model through
/// <see cref="LoopedLmModel.Train"/> and its <see cref="LoopedLmModel.Predict"/> works on the saved zip.
/// </summary>
public class ModelBuilderStyleTests(ITestOutputHelper output)
{
    private const int Loops = 4;                                   // the "tiny" preset's total_ut_steps

    [Fact]
    public void TrainSavesAZipThatPredictAndModelLoadScoreConsistently()
    {
        var work = Path.Combine(Path.GetTempPath(), $"looprpt-mb-{Guid.NewGuid():N}");
        try
        {
            var clock = Stopwatch.StartNew();
            var corpus = SampleCorpus.WriteTsv(Path.Combine(work, "corpus.tsv"), count: 200, seed: 1);
            var zip = Path.Combine(work, "out", "model.zip");
            LoopedLmModel.Train(zip, corpus);
            output.WriteLine($"train + save: {clock.Elapsed.TotalSeconds:F1} s");
            Assert.True(File.Exists(zip));

            // Predict loads the zip lazily (the static engine is created once per process; this is its only user).
            LoopedLmModel.MLNetModelPath = zip;
            string[] texts = ["The cat sat on the mat.", "A dog walked past a quiet garden.", "Quantum tunnelling of electrons.", ""];
            var predictions = texts.Select(t => LoopedLmModel.Predict(new LoopedLmModel.ModelInput { Text = t })).ToArray();
            output.WriteLine($"+ predict: {clock.Elapsed.TotalSeconds:F1} s");

            foreach (var p in predictions[..3])
            {
                int n = p.TokenCount;
                Assert.Equal(p.Tokens.Length - 1, n);                                   // BOS + text tokens; every token after BOS is predicted
                Assert.True(n > 0);
                Assert.Equal(n, p.TokenLogProbabilities.Length);
                Assert.Equal(n, p.ExitSteps.Length);
                Assert.All(p.TokenLogProbabilities, v => Assert.True(float.IsFinite(v) && v <= 0));
                // bitwise: checks integrality of exit steps, not two computations
                Assert.All(p.ExitSteps, s => Assert.True(s == MathF.Round(s) && s >= 1 && s <= Loops));
                Assert.True(float.IsFinite(p.LogLikelihood) && p.LogLikelihood < 0);
                Tolerance.AssertClose(p.TokenLogProbabilities.Sum(v => (double)v), p.LogLikelihood, absolute: 1e-3);
                Tolerance.AssertClose(Math.Exp(-(double)p.LogLikelihood / n), p.Perplexity, absolute: p.Perplexity * 1e-5);
                Tolerance.AssertClose(p.ExitSteps.Average(v => (double)v), p.MeanExitStep, absolute: 1e-5);
                Assert.InRange(p.MeanExitStep, 1, Loops);
                Tolerance.AssertClose(p.MeanExitStep / Loops, p.ComputeFraction, absolute: 1e-6);
                Assert.Empty(p.StepCorrectCounts);                                      // the compute-saving path keeps no per-step statistics
                Assert.Equal(p.Text, p.Text.ToLowerInvariant());                        // NormalizeText ran before the tokenizer
            }
            // Trained, not random: in-distribution text is far likelier than out-of-distribution text, and better than
            // uniform over the vocabulary.
            Assert.True(predictions[0].Perplexity < LoopedLmModel.VocabularySize / 4f, $"perplexity {predictions[0].Perplexity}");
            Assert.True(predictions[0].Perplexity < predictions[2].Perplexity / 4, $"{predictions[0].Perplexity} vs {predictions[2].Perplexity}");
            // Empty text: BOS only, nothing predicted (docs/mlnet.md, "Empty rows").
            Assert.Equal(0, predictions[3].TokenCount);
            // bitwise: the documented constant result, not a computed sum
            Assert.Equal(0f, predictions[3].LogLikelihood);
            Assert.True(float.IsNaN(predictions[3].Perplexity));

            // The zip reloads in another MLContext, and its batched scoring gives the prediction engine's values within
            // Tolerance (batched vs row by row: other matrix shapes, rounded differently by the CPU's GEMM kernels).
            var ml = new MLContext(seed: 7);
            var model = ml.Model.Load(zip, out var inputSchema);
            try
            {
                Assert.NotNull(inputSchema.GetColumnOrNull("Text"));
                var scored = model.Transform(ml.Data.LoadFromEnumerable(texts.Select(t => new LoopedLmModel.ModelInput { Text = t })));
                var rows = ml.Data.CreateEnumerable<LoopedLmModel.ModelOutput>(scored, reuseRowObject: false).ToArray();
                Assert.Equal(texts.Length, rows.Length);
                for (int i = 0; i < texts.Length; i++)
                {
                    Assert.Equal(predictions[i].Tokens, rows[i].Tokens);
                    Tolerance.AssertClose(predictions[i].LogLikelihood, rows[i].LogLikelihood, $"row {i}");
                    Tolerance.AssertClose(predictions[i].TokenLogProbabilities, rows[i].TokenLogProbabilities, $"row {i}");
                    // bitwise: integer-valued (token counts / exit steps) held in a float type
                    Assert.Equal(predictions[i].ExitSteps, rows[i].ExitSteps);
                    Tolerance.AssertClose(predictions[i].Perplexity, rows[i].Perplexity, $"row {i}");
                }
                var metrics = ml.LoopRpt().Evaluate(scored);
                Assert.Equal(texts.Length, metrics.Rows);
                Assert.InRange(metrics.MeanExitStep, 1, Loops);
            }
            finally
            {
                (model as IDisposable)?.Dispose();
            }
            output.WriteLine($"total: {clock.Elapsed.TotalSeconds:F1} s");
        }
        finally
        {
            if (Directory.Exists(work)) Directory.Delete(work, true);
        }
    }

    [Fact]
    public void TrainNamesAMissingDataFile()
    {
        var missing = Path.Combine(Path.GetTempPath(), $"looprpt-mb-missing-{Guid.NewGuid():N}.tsv");
        var e = Assert.Throws<FileNotFoundException>(() => LoopedLmModel.Train(Path.ChangeExtension(missing, ".zip"), missing));
        Assert.Contains(missing, e.Message);
    }
}
