using LoopRpt.Checkpoints;
using LoopRpt.MLNet;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace LoopRpt.Tests.MLNet;

public sealed class LabelledTokens
{
    public string Label { get; set; } = "";
    [VectorType] public int[] Tokens { get; set; } = [];
}

public sealed class LabelPrediction
{
    public uint PredictedLabel { get; set; }
    public float[] Score { get; set; } = [];
    public float[] Features { get; set; } = [];
}

public class FeaturizerTests
{
    /// <summary>Two classes: rows of low token ids and rows of high ones (a split a pooled embedding can see).</summary>
    private static List<LabelledTokens> Rows(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(i =>
        {
            bool high = i % 2 == 1;
            var tokens = Enumerable.Range(0, 3 + rng.Next(10)).Select(_ => rng.Next(32) + (high ? 32 : 0)).ToArray();
            return new LabelledTokens { Label = high ? "high" : "low", Tokens = tokens };
        }).ToList();
    }

    /// <summary>Independent reference: full-depth forward, mean of the last loop's states over the row, unit norm.</summary>
    private static float[] FullDepthPooled(string modelDir, int[] tokens)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var loaded = ModelDirectory.Load(modelDir);
        using var lm = loaded.Model;
        var h = lm.Forward(tensor(tokens.Select(t => (long)t).ToArray(), [1, tokens.Length])).Hidden[^1][0].mean([0]);   // (H)
        return TestUtil.ToArray(h / h.norm());
    }

    [Fact]
    public void FeaturesFeedSdcaAndSurviveSaveLoad()
    {
        var modelDir = MlNetTestData.SaveTinyModel(vocab: 64);
        var zip = MlNetTestData.TempDir("features") + ".zip";
        try
        {
            var ml = new MLContext(seed: 1);
            var train = ml.Data.LoadFromEnumerable(Rows(80, 1));
            var test = Rows(12, 2);
            var pipeline = ml.LoopRpt().Featurize(modelDir, exitThreshold: 1.0)
                .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
                .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy("Label", "Features", maximumNumberOfIterations: 20));
            var featurizer = ml.LoopRpt().Featurize(modelDir, exitThreshold: 1.0);       // estimator schema == fitted schema
            using (var fitted = featurizer.Fit(train))
                Assert.Equal(MlNetTestData.Describe(featurizer.GetOutputSchema(MlNetTestData.Shape(train.Schema))),
                    MlNetTestData.DescribeAsShape(fitted.GetOutputSchema(train.Schema)));
            var model = pipeline.Fit(train);

            var scored = model.Transform(ml.Data.LoadFromEnumerable(test));
            var featureType = (VectorDataViewType)scored.Schema["Features"].Type;
            Assert.Equal(32, featureType.Size);                                   // a known-size vector: what SDCA needs
            var features = scored.GetColumn<float[]>("Features").ToArray();
            for (int i = 0; i < test.Count; i++)
            {
                var expected = FullDepthPooled(modelDir, test[i].Tokens);
                for (int k = 0; k < 32; k++) Assert.True(Math.Abs(expected[k] - features[i][k]) < 1e-5, $"row {i} dim {k}: {expected[k]} vs {features[i][k]}");
            }
            var predicted = scored.GetColumn<uint>("PredictedLabel").ToArray();
            var metrics = ml.MulticlassClassification.Evaluate(scored, "Label");
            Assert.Equal(2, metrics.ConfusionMatrix.NumberOfClasses);

            ml.Model.Save(model, train.Schema, zip);
            ScorerWorkoutTests.StateCacheReset();                                 // the reloaded model decodes the weights from the zip
            var reloaded = ml.Model.Load(zip, out _);
            var again = reloaded.Transform(ml.Data.LoadFromEnumerable(test));
            Assert.Equal(predicted, again.GetColumn<uint>("PredictedLabel").ToArray());
            var reFeatures = again.GetColumn<float[]>("Features").ToArray();
            for (int i = 0; i < test.Count; i++)
                for (int k = 0; k < 32; k++) Assert.True(Math.Abs(features[i][k] - reFeatures[i][k]) < 1e-5);

            var engine = ml.Model.CreatePredictionEngine<LabelledTokens, LabelPrediction>(reloaded);
            var one = engine.Predict(test[3]);
            Assert.Equal(predicted[3], one.PredictedLabel);
            Assert.Equal(32, one.Features.Length);
        }
        finally
        {
            MlNetTestData.Delete(modelDir, zip);
        }
    }

    [Fact]
    public void EmptyRowsGetZerosAndBadInputFailsWithMlNetShapes()
    {
        var modelDir = MlNetTestData.SaveTinyModel(vocab: 64);
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(new[] { new LabelledTokens { Label = "x", Tokens = [] }, new LabelledTokens { Label = "y", Tokens = [1, 2, 3] } });
            using var featurizer = ml.LoopRpt().Featurize(modelDir).Fit(data);
            var features = featurizer.Transform(data).GetColumn<float[]>("Features").ToArray();
            // bitwise: an empty row's features are the zero fill
            Assert.All(features[0], v => Assert.Equal(0f, v));
            Tolerance.AssertClose(1.0, Math.Sqrt(features[1].Sum(v => (double)v * v)), absolute: 1e-5);      // unit norm

            var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.LoopRpt().Featurize(modelDir, tokenColumnName: "Ids").Fit(data));
            Assert.Contains("Could not find input column 'Ids'", missing.Message);
            var wrong = Assert.Throws<ArgumentOutOfRangeException>(() => ml.LoopRpt().Featurize(modelDir, tokenColumnName: "Label").Fit(data));
            Assert.Contains("Schema mismatch for input column 'Label'", wrong.Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => ml.LoopRpt().Featurize(modelDir, exitThreshold: 1.5));
            Assert.Throws<DirectoryNotFoundException>(() => ml.LoopRpt().Featurize(modelDir + "-absent"));
        }
        finally
        {
            MlNetTestData.Delete(modelDir);
        }
    }
}
