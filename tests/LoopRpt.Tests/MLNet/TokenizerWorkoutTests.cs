using LoopRpt.MLNet;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

public class TokenizerWorkoutTests
{
    public sealed class Tokenized
    {
        public int[] Tokens { get; set; } = [];
    }

    public sealed class NumberRow
    {
        public float Text { get; set; }
    }

    [Fact]
    public void SchemaSaveLoadAndPredictionEngine()
    {
        var zip = MlNetTestData.TempDir("tok") + ".zip";
        try
        {
            var ml = new MLContext(seed: 1);
            var docs = MlNetTestData.Docs(50, 1);
            docs.Add(new Doc { Text = "" });
            var data = ml.Data.LoadFromEnumerable(docs);
            var estimator = ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 300);
            var shape = estimator.GetOutputSchema(MlNetTestData.Shape(data.Schema));
            var transformer = estimator.Fit(data);
            var output = transformer.Transform(data);
            Assert.Equal(MlNetTestData.Describe(shape), MlNetTestData.DescribeAsShape(output.Schema));
            Assert.True(transformer.Tokenizer.VocabularySize <= 300);

            var tokens = output.GetColumn<int[]>("Tokens").Select(t => t ?? []).ToArray();
            Assert.Equal(transformer.Encode(docs[0].Text), tokens[0]);
            Assert.Equal(docs[0].Text, transformer.Decode(tokens[0]));
            Assert.Equal(0, tokens[0][0]);                                 // BOS = <|endoftext|> (id 0)
            Assert.Equal([0], tokens[^1]);                                 // empty text: BOS only (documented)

            ml.Model.Save(transformer, data.Schema, zip);
            var loaded = new MLContext().Model.Load(zip, out _);
            var again = loaded.Transform(data).GetColumn<int[]>("Tokens").Select(t => t ?? []).ToArray();
            for (int i = 0; i < tokens.Length; i++) Assert.Equal(tokens[i], again[i]);

            var engine = ml.Model.CreatePredictionEngine<Doc, Tokenized>(loaded);
            Assert.Equal(tokens[3], engine.Predict(docs[3]).Tokens);
            Assert.Equal([0], engine.Predict(new Doc { Text = null! }).Tokens);   // null text: same as empty
        }
        finally
        {
            MlNetTestData.Delete(zip);
        }
    }

    [Fact]
    public void PretrainedGpt2AndMaxLength()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new Doc { Text = "Hello world, this is a long sentence." } });
        var t = ml.LoopRpt().TokenizePretrained("Tokens", "Text", "gpt2", maxLength: 3).Fit(data);
        var ids = t.Transform(data).GetColumn<int[]>("Tokens").Single();
        Assert.Equal([50256, 15496, 995], ids);
    }

    [Fact]
    public void InvalidInputsFail()
    {
        var ml = new MLContext(seed: 1);
        var cat = ml.LoopRpt();
        var data = ml.Data.LoadFromEnumerable(MlNetTestData.Docs(5, 1));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => cat.Tokenize("Tokens", "Nope").Fit(data));
        Assert.Contains("Could not find input column 'Nope'", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => cat.Tokenize("Tokens", "Nope").GetOutputSchema(MlNetTestData.Shape(data.Schema)));
        var numbers = ml.Data.LoadFromEnumerable(new[] { new NumberRow { Text = 1 } });
        var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => cat.Tokenize("Tokens", "Text").Fit(numbers));
        Assert.Contains("Schema mismatch for input column 'Text': expected String, got Single", e2.Message);

        var empty = ml.Data.LoadFromEnumerable(new List<Doc>());
        var e3 = Assert.Throws<InvalidOperationException>(() => cat.Tokenize("Tokens", "Text").Fit(empty));
        Assert.Contains("no rows", e3.Message);
        var blank = ml.Data.LoadFromEnumerable(new[] { new Doc { Text = "" }, new Doc { Text = "" } });
        var e4 = Assert.Throws<InvalidOperationException>(() => cat.Tokenize("Tokens", "Text").Fit(blank));
        Assert.Contains("all 2 texts in column 'Text' are empty", e4.Message);

        Assert.Throws<ArgumentOutOfRangeException>(() => cat.Tokenize("Tokens", "Text", vocabularySize: 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => cat.Tokenize("Tokens", "Text", maxLength: -1));
        Assert.Throws<ArgumentException>(() => cat.Tokenize(new TokenizingEstimator.Options { Source = TokenizerSource.BpeFiles }));
        Assert.Throws<FileNotFoundException>(() => cat.Tokenize(new TokenizingEstimator.Options { Source = TokenizerSource.SentencePiece, SentencePieceModelFile = "/nonexistent.model" }).Fit(data));
    }
}
