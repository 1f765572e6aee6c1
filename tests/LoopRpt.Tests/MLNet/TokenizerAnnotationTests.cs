using LoopRpt.MLNet;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

/// <summary>The tokenizer reaches the trainer through the token column's annotations, not through the MLContext.</summary>
public class TokenizerAnnotationTests
{
    private static LoopedLmTrainerEstimator.Options Untold()
    {
        var o = TrainerWorkoutTests.Tiny(2, 0);
        o.VocabularySize = null;                                            // neither the size ...
        o.TokenizerDescription = null;                                      // ... nor the tokenizer is given
        return o;
    }

    [Fact]
    public void TwoPipelinesOnOneContextKeepTheirOwnTokenizers()
    {
        var ml = new MLContext(seed: 1);
        var text = ml.Data.LoadFromEnumerable(MlNetTestData.Docs(40, 3));
        // Both tokenizers write the same column on the same MLContext; the second is fitted last.
        var first = ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 270).Fit(text);
        var second = ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 280).Fit(text);
        Assert.NotEqual(first.Tokenizer.VocabularySize, second.Tokenizer.VocabularySize);

        var tokens = first.Transform(text);
        var column = tokens.Schema["Tokens"];
        int size = 0;
        column.Annotations.GetValue(TokenizerAnnotations.VocabularySize, ref size);
        Assert.Equal(first.Tokenizer.VocabularySize, size);
        Assert.Equal(tokens.Schema["Tokens"].Annotations.Schema.Select(c => c.Name), first.GetOutputSchema(text.Schema)["Tokens"].Annotations.Schema.Select(c => c.Name));

        using var model = ml.LoopRpt().TrainLoopedLm(Untold()).Fit(tokens);
        Assert.Equal(first.Tokenizer.VocabularySize, model.Config.VocabSize);
        Assert.Equal(first.Tokenizer.Spec.ToJsonObject().ToJsonString(), model.Meta.Tokenizer!.ToJsonString());
        // The rows are those of the tokenizer: the annotated view reads the same ids.
        Assert.Equal(MlNetTestData.Column<int[]>(ml, tokens, "Tokens").Select(r => r.Length), text.GetColumn<string>("Text").Select(t => first.Encode(t).Length));
    }

    [Fact]
    public void InAnEstimatorChainTheTrainerFindsTheTokenizerWithoutBeingTold()
    {
        var ml = new MLContext(seed: 1);
        var text = ml.Data.LoadFromEnumerable(MlNetTestData.Docs(40, 3));
        using var a = ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 270).Append(ml.LoopRpt().TrainLoopedLm(Untold())).Fit(text);
        using var b = ml.LoopRpt().TrainLoopedLmOnText("Text", Untold(), new TokenizingEstimator.Options { VocabularySize = 280 }).Fit(text);
        var tokenizerA = ((TokenizingTransformer)a.First()).Tokenizer;
        var tokenizerB = ((TokenizingTransformer)b.First()).Tokenizer;
        Assert.Equal(tokenizerA.VocabularySize, a.LastTransformer.Config.VocabSize);
        Assert.Equal(tokenizerB.VocabularySize, b.LastTransformer.Config.VocabSize);
        Assert.NotEqual(a.LastTransformer.Config.VocabSize, b.LastTransformer.Config.VocabSize);
        Assert.Equal(tokenizerA.Spec.ToJsonObject().ToJsonString(), a.LastTransformer.Meta.Tokenizer!.ToJsonString());
        Assert.Equal(tokenizerB.Spec.ToJsonObject().ToJsonString(), b.LastTransformer.Meta.Tokenizer!.ToJsonString());
    }

    [Fact]
    public void TokensWithoutAnnotationsAreSizedFromTheirLargestId()
    {
        var ml = new MLContext(seed: 1);
        // A tokenizer fitted on the same context no longer leaks into a pipeline that does not use it.
        ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 270).Fit(ml.Data.LoadFromEnumerable(MlNetTestData.Docs(40, 3)));
        var docs = MlNetTestData.TokenDocs(30, 50, seed: 4);
        using var model = ml.LoopRpt().TrainLoopedLm(Untold()).Fit(ml.Data.LoadFromEnumerable(docs));
        Assert.Equal(docs.Max(d => d.Tokens.DefaultIfEmpty(-1).Max()) + 1, model.Config.VocabSize);
        Assert.Null(model.Meta.Tokenizer);
    }
}
