using LoopRpt.Hosting;
using LoopRpt.Tokenization;

namespace LoopRpt.Tests.Hosting;

public class TokenizerServiceTests
{
    [Fact]
    public void TrainedBpeServesRetrainingAndRoundTripsThroughItsDescription()
    {
        var texts = Enumerable.Range(0, 40).Select(i => $"let x{i % 5} = {i} + {i % 3};").ToList();
        var tokenizer = LoopRptTokenizer.Train(texts, new ByteLevelBpeTrainerOptions { VocabularySize = 300 });
        var service = new LoopRptTokenizerService(tokenizer);
        Assert.Equal(tokenizer.VocabularySize, service.VocabSize);
        var ids = service.Encode("let x1 = 7 + 1;");
        Assert.Equal(tokenizer.Encode("let x1 = 7 + 1;"), ids);
        Assert.All(ids, id => Assert.InRange(id, 0, service.VocabSize - 1));
        Assert.Equal("let x1 = 7 + 1;", service.Decode(ids));
        Assert.NotNull(service.EndOfTextId);

        var again = LoopRptTokenizerService.FromDescription(service.Describe());
        Assert.Equal(ids, again.Encode("let x1 = 7 + 1;"));
        Assert.Equal(service.VocabSize, again.VocabSize);
    }
}
