using LoopRpt.Evaluation;
using LoopRpt.MLNet;
using LoopRpt.MLNet.Persistence;
using LoopRpt.Model;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

public class ScorerWorkoutTests
{
    private const int Vocab = 50;

    private static float[][] Vectors(IDataView view, string col)
        => view.GetColumn<float[]>(col).Select(v => v ?? []).ToArray();

    [Fact]
    public void EstimatorSchemaEqualsFittedSchemaAndBatchedEqualsRowByRow()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(20, Vocab, 3));
            var estimator = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, BatchSize = 4, ExitMode = ExitMode.Q(0.5) });
            var shape = estimator.GetOutputSchema(MlNetTestData.Shape(data.Schema));
            using var scorer = estimator.Fit(data);
            var scored = scorer.Transform(data);
            Assert.Equal(MlNetTestData.Describe(shape), MlNetTestData.DescribeAsShape(scored.Schema));
            Assert.Equal(MlNetTestData.DescribeAsShape(scorer.GetOutputSchema(data.Schema)), MlNetTestData.DescribeAsShape(scored.Schema));

            // Independent per-row computation: batch size 1, one row at a time. Other shapes, so within Tolerance
            // (GEMM kernels round by shape and processor); a row's neighbours would shift it far more.
            var rows = MlNetTestData.TokenDocs(20, Vocab, 3);
            var lp = Vectors(scored, ScoreColumns.TokenLogProbabilities);
            var ll = scored.GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
            for (int i = 0; i < rows.Count; i++)
            {
                var one = scorer.Engine.Score([rows[i].Tokens])[0];
                Tolerance.AssertClose(one.TokenLogProbabilities, lp[i], $"row {i}");
                Tolerance.AssertClose(one.LogLikelihood, ll[i], $"row {i}");
                Assert.Equal(Math.Max(0, rows[i].Tokens.Length - 1), lp[i].Length);
            }
            // Rows with a single token score to the documented empty result.
            int single = rows.FindIndex(r => r.Tokens.Length == 1);
            // bitwise: the documented constant result, not a computed sum
            Assert.Equal(0f, ll[single]);
            Assert.True(float.IsNaN(scored.GetColumn<float>(ScoreColumns.MeanExitStep).ElementAt(single)));
            Assert.Equal(0, scored.GetColumn<int>(ScoreColumns.TokenCount).ElementAt(single));
            // Exit steps follow the rule: q = 0.5 exits at various steps in [1, 3].
            var exits = Vectors(scored, ScoreColumns.ExitSteps).SelectMany(x => x).ToArray();
            Assert.All(exits, e => Assert.InRange(e, 1, 3));
            Assert.True(exits.Distinct().Count() > 1, "Q-exit should pick more than one step on this model");
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    [Fact]
    public void LastStepLogLikelihoodMatchesTheModelDirectly()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var ml = new MLContext(seed: 1);
            var docs = MlNetTestData.TokenDocs(3, Vocab, 9);
            var data = ml.Data.LoadFromEnumerable(docs);
            using var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Last }).Fit(data);
            var ll = scorer.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
            var loaded = LoopRpt.Checkpoints.ModelDirectory.Load(dir);
            using var lmLoaded = loaded.Model;
            for (int i = 0; i < docs.Count; i++)
            {
                var t = docs[i].Tokens;
                if (t.Length < 2) continue;
                using var scope = TorchSharp.torch.NewDisposeScope();
                using var _ = TorchSharp.torch.no_grad();
                var ids = TorchSharp.torch.tensor(t[..^1].Select(x => (long)x).ToArray(), [1, t.Length - 1]);
                var tg = TorchSharp.torch.tensor(t[1..].Select(x => (long)x).ToArray(), [1, t.Length - 1]);
                var output = loaded.Model.Forward(ids);
                double expected = loaded.Model.GoldLogProbs(output.Hidden[^1], tg).sum().item<float>();
                Tolerance.AssertClose(expected, ll[i], absolute: 1e-3);        // unpadded vs padded forward: equal up to float rounding
            }
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    [Fact]
    public void SaveLoadGivesIdenticalScoresAndPredictionEngineWorks()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        var zip = MlNetTestData.TempDir("zip") + ".zip";
        try
        {
            var ml = new MLContext(seed: 1);
            var docs = MlNetTestData.TokenDocs(12, Vocab, 4);
            var data = ml.Data.LoadFromEnumerable(docs);
            float[][] before;
            float[] beforeLl;
            Scored predicted;
            using (var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, BatchSize = 5, Storage = ModelStorage.Embedded, PerStepStatistics = true }).Fit(data))
            {
                var scored = scorer.Transform(data);
                before = Vectors(scored, ScoreColumns.TokenLogProbabilities);
                beforeLl = scored.GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
                ml.Model.Save(scorer, data.Schema, zip);
                var engine = ml.Model.CreatePredictionEngine<TokenDoc, Scored>(scorer);
                predicted = engine.Predict(docs[0]);
                // The engine scores one row (batch of 1), the view a batch of 5: other shapes, so within Tolerance.
                Tolerance.AssertClose(beforeLl[0], predicted.LogLikelihood);
                Tolerance.AssertClose(before[0], predicted.TokenLogProbabilities);
                Assert.Equal(3, predicted.StepCorrectCounts.Length);
            }
            MlNetTestData.Delete(dir);                        // embedded: the zip alone must suffice

            StateCacheReset();                                // decode from the zip, share nothing with the live scorer
            var ml2 = new MLContext(seed: 2);
            var model = ml2.Model.Load(zip, out var schema);
            Assert.NotNull(schema.GetColumnOrNull("Tokens"));
            var scored2 = model.Transform(ml2.Data.LoadFromEnumerable(docs));
            var after = Vectors(scored2, ScoreColumns.TokenLogProbabilities);
            var afterLl = scored2.GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
            for (int i = 0; i < docs.Count; i++)
            {
                Tolerance.AssertClose(before[i], after[i], $"row {i}");   // the reloaded twin may batch differently
                Tolerance.AssertClose(beforeLl[i], afterLl[i], $"row {i}");
            }
            var engine2 = ml2.Model.CreatePredictionEngine<TokenDoc, Scored>(model);
            Assert.Equal(predicted.TokenLogProbabilities, engine2.Predict(docs[0]).TokenLogProbabilities);   // bitwise: both one row, same engine
            (model as IDisposable)?.Dispose();
        }
        finally
        {
            MlNetTestData.Delete(dir, zip);
        }
    }

    [Fact]
    public void DirectoryStorageReferencesTheModelDirectory()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        var zip = MlNetTestData.TempDir("zip") + ".zip";
        var embeddedZip = MlNetTestData.TempDir("zip") + ".zip";
        try
        {
            var ml = new MLContext(seed: 1);
            var docs = MlNetTestData.TokenDocs(5, Vocab, 4);
            var data = ml.Data.LoadFromEnumerable(docs);
            float[] before;
            using (var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, Storage = ModelStorage.Directory }).Fit(data))
            {
                before = scorer.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
                ml.Model.Save(scorer, data.Schema, zip);
            }
            using (var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, Storage = ModelStorage.Embedded }).Fit(data))
                ml.Model.Save(scorer, data.Schema, embeddedZip);
            Assert.True(new FileInfo(zip).Length < new FileInfo(embeddedZip).Length / 2, "the directory-referencing zip should not hold the weights");

            var model = new MLContext().Model.Load(zip, out _);
            // The reloaded twin scores through another path than the live scorer (observed on an AVX-512 machine:
            // -7.87393808 vs -7.87393761, 6e-8 relative); per-document sums of a few float32 terms: the default bound.
            Tolerance.AssertClose(before, model.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray(), "after load");

            // The directory changes: loading the zip's scorer again must fail and say so.
            StateCacheReset();
            File.AppendAllText(Path.Combine(dir, "meta.json"), " ");
            var stale = new MLContext().Model.Load(zip, out _);
            var e = Assert.ThrowsAny<Exception>(() => stale.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray());
            Assert.Contains("changed since the ML.NET model was saved", Flatten(e));
        }
        finally
        {
            MlNetTestData.Delete(dir, zip, embeddedZip);
        }
    }

    internal static void StateCacheReset() => StateCache<ScoringEngine>.Clear();

    internal static string Flatten(Exception e)
    {
        var s = "";
        for (Exception? x = e; x is not null; x = x.InnerException) s += x.GetType().Name + ": " + x.Message + "\n";
        return s;
    }

    [Fact]
    public void InvalidInputsFailWithMLNetExceptionTypes()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(3, Vocab, 4));
            var textData = ml.Data.LoadFromEnumerable(new[] { new Doc { Text = "x" } });
            var cat = ml.LoopRpt();

            var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => cat.ScoreWithModel(dir, tokenColumnName: "Nope").Fit(data));
            Assert.Contains("Could not find input column 'Nope'", e1.Message);
            var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => cat.ScoreWithModel(dir, tokenColumnName: "Text").Fit(textData));
            Assert.Contains("Schema mismatch for input column 'Text'", e2.Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => cat.ScoreWithModel(dir, tokenColumnName: "Text").GetOutputSchema(MlNetTestData.Shape(textData.Schema)));

            Assert.Throws<ArgumentOutOfRangeException>(() => cat.ScoreWithModel(dir, exitThreshold: 1.5));
            Assert.Throws<ArgumentOutOfRangeException>(() => cat.ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, BatchSize = 0 }));
            var e3 = Assert.Throws<ArgumentOutOfRangeException>(() => cat.ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Fixed(7) }).Fit(data));
            Assert.Contains("beyond the model's 3 loops", e3.Message);

            var missing = Assert.Throws<DirectoryNotFoundException>(() => cat.ScoreWithModel("/nonexistent/looprpt-model"));
            Assert.Contains("/nonexistent/looprpt-model", missing.Message);

            File.WriteAllText(Path.Combine(dir, "config.json"), "{ not json");
            var corrupt = Assert.Throws<InvalidDataException>(() => cat.ScoreWithModel(dir).Fit(data));
            Assert.Contains("config.json", corrupt.Message);
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    [Fact]
    public void IncompatibleModelVersionFails()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var meta = Path.Combine(dir, "meta.json");
            File.WriteAllText(meta, File.ReadAllText(meta).Replace("\"format_version\": 1", "\"format_version\": 99"));
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(3, Vocab, 4));
            var e = Assert.Throws<InvalidDataException>(() => ml.LoopRpt().ScoreWithModel(dir).Fit(data));
            Assert.Contains("format_version 99", e.Message);
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    /// <summary>
    /// Issue 19 §4 / issue 16 §1: the method's nested buckets by default, the top shares of tokens on request (cut points
    /// midway between neighbouring entropies, as the CLI's evaluator cuts), disjoint edges as an explicit alternative.
    /// </summary>
    [Fact]
    public void EvaluateBucketsNestedByDefaultByTopFractionsOrByEdges()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(16, Vocab, 8));
            using var scorer = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Q(0.5) }).Fit(data);
            var scored = scorer.Transform(data);
            var h = Vectors(scored, ScoreColumns.TokenEntropies).Zip(Vectors(scored, ScoreColumns.TokenLogProbabilities), (e, l) => e.Take(l.Length))
                .SelectMany(x => x).Select(x => (double)x).OrderDescending().ToArray();
            var correct = Vectors(scored, ScoreColumns.Correct).SelectMany(x => x).ToArray();
            var entropyOf = Vectors(scored, ScoreColumns.TokenEntropies).Zip(Vectors(scored, ScoreColumns.TokenLogProbabilities), (e, l) => e.Take(l.Length)).SelectMany(x => x).ToArray();

            var published = ml.LoopRpt().Evaluate(scored);
            Assert.Equal(["All", "Easy", "Medium", "Hard"], published.EntropyBuckets.Select(b => b.Name));
            Assert.Equal(["all tokens", "H > 0.5 nats", "H > 1 nats", "H > 1.5 nats"], published.EntropyBuckets.Select(b => b.Label));
            foreach (var (b, cut) in published.EntropyBuckets.Zip(new[] { -1.0, 0.5, 1.0, 1.5 }))
            {
                Assert.Equal(h.Count(x => x > cut), b.Tokens);
                var inBucket = Enumerable.Range(0, correct.Length).Where(i => entropyOf[i] > cut).ToArray();
                Tolerance.AssertClose(inBucket.Length == 0 ? double.NaN : inBucket.Average(i => (double)correct[i]), b.Accuracy, absolute: 1e-12);
            }

            var m = ml.LoopRpt().Evaluate(scored, buckets: EntropyBuckets.Parse("top:50,30,20"));
            Assert.Equal(h.Length, m.Tokens);
            Assert.Equal(4, m.EntropyBuckets.Count);
            Assert.Equal(h.Length, m.EntropyBuckets[0].Tokens);
            foreach (var (b, f) in m.EntropyBuckets.Skip(1).Zip(new[] { 0.5, 0.3, 0.2 }))
            {
                int k = (int)Math.Ceiling(f * h.Length);
                double cut = (h[k - 1] + h[k]) / 2;                                                  // independent: midway below the k-th highest
                Tolerance.AssertClose(cut, b.Lower, absolute: 1e-12);
                Assert.Equal(h.Count(x => x > cut), b.Tokens);
                Assert.StartsWith(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"top {f * 100:0} % (H > "), b.Label);
            }

            var fixedEdges = ml.LoopRpt().Evaluate(scored, entropyBucketEdges: [0.5, 2]);
            Assert.Equal(["H < 0.5 nats", "0.5 ≤ H < 2 nats", "H ≥ 2 nats"], fixedEdges.EntropyBuckets.Select(b => b.Label));
            Assert.Equal(h.Length, fixedEdges.EntropyBuckets.Sum(b => b.Tokens));
            Assert.Equal(h.Count(x => x >= 2), fixedEdges.EntropyBuckets[2].Tokens);
            Assert.Throws<ArgumentException>(() => ml.LoopRpt().Evaluate(scored, buckets: EntropyBuckets.TopFractions, entropyBucketEdges: [1]));
            Assert.Throws<ArgumentOutOfRangeException>(() => ml.LoopRpt().Evaluate(scored, entropyBucketEdges: [2, 1]));
            Assert.Throws<ArgumentOutOfRangeException>(() => ml.LoopRpt().Evaluate(scored, buckets: new EntropyBuckets(BucketRule.TopFraction, 0.2, 0.5, 0.1)));
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    [Fact]
    public void EvaluateAndParetoAgreeWithEachOther()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(MlNetTestData.TokenDocs(16, Vocab, 8));
            using var q5 = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Q(0.5), PerStepStatistics = true }).Fit(data);
            var scored = q5.Transform(data);
            var m = ml.LoopRpt().Evaluate(scored);

            // Independent recomputation from the columns.
            var correct = Vectors(scored, ScoreColumns.Correct).SelectMany(x => x).ToArray();
            var exits = Vectors(scored, ScoreColumns.ExitSteps).SelectMany(x => x).ToArray();
            var lps = Vectors(scored, ScoreColumns.TokenLogProbabilities).SelectMany(x => x).ToArray();
            Assert.Equal(correct.Length, m.Tokens);
            Tolerance.AssertClose(correct.Average(x => (double)x), m.Accuracy, absolute: 1e-12);
            Tolerance.AssertClose(exits.Average(x => (double)x), m.MeanExitStep, absolute: 1e-9);
            Tolerance.AssertClose(-lps.Average(x => (double)x), m.NegativeLogLikelihood, absolute: 1e-6);
            Tolerance.AssertClose(m.MeanExitStep / 3, m.ComputeFraction, absolute: 1e-6);
            Assert.Equal(m.Tokens, m.EntropyBuckets[0].Tokens);
            Assert.Equal(3, m.StepAccuracy.Length);

            var pareto = ml.LoopRpt().ParetoSweep(q5, data, [0.5, 1.0]);
            Tolerance.AssertClose(m.Accuracy, pareto[0].Accuracy, absolute: 1e-12);
            Tolerance.AssertClose(m.MeanExitStep, pareto[0].MeanExitStep, absolute: 1e-9);
            Tolerance.AssertClose(m.StepAccuracy[^1], pareto[1].Accuracy, absolute: 1e-12);   // q = 1 always exits at the last step
            Tolerance.AssertClose(3, pareto[1].MeanExitStep, absolute: 1e-12);
            Assert.Contains(pareto, p => p.IsParetoOptimal);
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }

    [Fact]
    public void DefaultScoringSkipsLoopsAndMatchesTheAdaptiveScorer()
    {
        var dir = MlNetTestData.SaveTinyModel(Vocab);
        try
        {
            var ml = new MLContext(seed: 1);
            var docs = MlNetTestData.TokenDocs(12, Vocab, 4).Where(d => d.Tokens.Length >= 2).ToList();
            var data = ml.Data.LoadFromEnumerable(docs);
            using var fast = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Q(0.5) }).Fit(data);
            using var full = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Last }).Fit(data);
            var exits = Vectors(fast.Transform(data), ScoreColumns.ExitSteps);
            var lps = Vectors(fast.Transform(data), ScoreColumns.TokenLogProbabilities);
            var ratio = fast.Transform(data).GetColumn<float>(ScoreColumns.ComputeFraction).ToArray();

            // Independent computation: the Inference scorer on each document alone.
            using var model = LoopRpt.Checkpoints.ModelDirectory.Load(dir).Model;
            var scorer = new LoopRpt.Inference.AdaptiveExitScorer(model, new LoopRpt.Inference.AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.5) });
            for (int i = 0; i < docs.Count; i++)
            {
                using var scope = TorchSharp.torch.NewDisposeScope();
                var ids = TorchSharp.torch.tensor(docs[i].Tokens.Select(t => (long)t).ToArray()).unsqueeze(0);
                using var score = scorer.Score(ids);
                int n = docs[i].Tokens.Length - 1;
                var expectedLp = TestUtil.ToArray(score.GoldLogProbs)[..n];
                var expectedExit = TestUtil.ToArray(score.ExitSteps.to_type(TorchSharp.torch.ScalarType.Float32) + 1)[..n];
                // bitwise: integer-valued (token counts / exit steps) held in a float type
                Assert.Equal(expectedExit, exits[i]);
                for (int k = 0; k < n; k++) Tolerance.AssertClose(expectedLp[k], lps[i][k], absolute: 1e-5);
                Tolerance.AssertClose(exits[i].Average() / 3, ratio[i], absolute: 1e-6);
            }
            // Gates of a random model straddle q = 0.5, so some tokens stop early and compute is saved.
            Assert.Contains(exits.SelectMany(e => e), e => e < 3);
            // At full depth the adaptive path equals the full-depth reference.
            var fullLl = full.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray();
            using var last = ml.LoopRpt().ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = dir, ExitMode = ExitMode.Last, PerStepStatistics = true }).Fit(data);
            Tolerance.AssertClose(last.Transform(data).GetColumn<float>(ScoreColumns.LogLikelihood).ToArray(), fullLl, "last vs full");
        }
        finally
        {
            MlNetTestData.Delete(dir);
        }
    }
}
