using LoopRpt.Tokenization;

namespace LoopRpt.Tests.Tokenization;

public class ByteLevelBpeTrainerTests
{
    // Corpus "abab abab abc": pre-tokens "abab", " abab", " abc" → symbols [a b a b], [Ġ a b a b], [Ġ a b c].
    // Pair counts: (a,b)=5, (b,a)=2, (Ġ,a)=2, (b,c)=1 → merge 1: a+b.
    // Then [ab ab], [Ġ ab ab], [Ġ ab c]: (ab,ab)=2, (Ġ,ab)=2, (ab,c)=1; tie → ordinal "ab" < "Ġ" → merge 2: ab+ab.
    // Then [abab], [Ġ abab], [Ġ ab c]: every pair once; tie → smallest left "ab" → merge 3: ab+c.
    private static readonly string[] Corpus = ["abab abab abc"];

    [Fact]
    public void LearnsHandCheckedMerges()
    {
        var bpe = new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { VocabularySize = 1 + 256 + 3, MinFrequency = 1 }).Train(Corpus);
        Assert.Equal([("a", "b"), ("ab", "ab"), ("ab", "c")], bpe.Merges);
        Assert.Equal(0, bpe.Vocabulary["<|endoftext|>"]);
        Assert.Equal(1 + 'a', bpe.Vocabulary["a"]);                 // byte symbols follow the special tokens in byte order
        Assert.Equal(1 + 0x20, bpe.Vocabulary["\u0120"]);           // space → 'Ġ'
        Assert.Equal(257, bpe.Vocabulary["ab"]);
        Assert.Equal(258, bpe.Vocabulary["abab"]);
        Assert.Equal(259, bpe.Vocabulary["abc"]);
    }

    [Fact]
    public void MinFrequencyStopsEarly()
    {
        var bpe = new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { VocabularySize = 1000, MinFrequency = 2 }).Train(Corpus);
        Assert.Equal([("a", "b"), ("ab", "ab")], bpe.Merges);
        Assert.Equal(259, bpe.Count);
    }

    [Fact]
    public void TrainedVocabularyLoadsIntoMicrosoftMLTokenizersBpe()
    {
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromTrained(
            new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { VocabularySize = 260, MinFrequency = 1 }).Train(Corpus)));
        Assert.IsType<Microsoft.ML.Tokenizers.BpeTokenizer>(tok.Inner);
        Assert.Equal(tok.Encode("abab abc"), new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { VocabularySize = 260, MinFrequency = 1 }).Train(Corpus).CreateTokenizer().EncodeToIds("abab abc"));
        Assert.Equal([258, 1 + 0x20, 259], tok.Encode("abab abc"));
        Assert.Equal([0, 258, 0], tok.Encode("abab", addBos: true, addEos: true));
        Assert.Equal("abab abc", tok.Decode(tok.Encode("abab abc", addBos: true)));
        const string unicode = "héllo wörld ✓ 日本";                // bytes never seen in training still round-trip
        Assert.Equal(unicode, tok.Decode(tok.Encode(unicode)));
        Assert.Equal(260, tok.VocabularySize);
    }

    [Fact]
    public void SpecRoundTripsThroughJson()
    {
        var tok = LoopRptTokenizer.Train(["the cat sat on the mat", "the dog sat on the log"], new ByteLevelBpeTrainerOptions { VocabularySize = 280 });
        var again = LoopRptTokenizer.Create(TokenizerSpec.FromJson(tok.Spec.ToJson()));
        Assert.Equal(tok.Encode("the cat sat on the log"), again.Encode("the cat sat on the log"));
        var dir = Path.Combine(Path.GetTempPath(), "looprpt-bpe-" + Guid.NewGuid().ToString("N"));
        try
        {
            var bpe = new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { VocabularySize = 280 }).Train(["the cat sat on the mat", "the dog sat on the log"]);
            bpe.Save(dir);
            var files = LoopRptTokenizer.Create(TokenizerSpec.FromBpeFiles(Path.Combine(dir, "vocab.json"), Path.Combine(dir, "merges.txt")));
            Assert.Equal(tok.Encode("the cat sat on the log"), files.Encode("the cat sat on the log"));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Gpt2TiktokenGivesKnownIds()
    {
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromTiktoken("gpt2"));
        Assert.Equal([15496, 995], tok.Encode("Hello world"));
        Assert.Equal(50256, tok.BosTokenId);
        Assert.Equal(50257, tok.VocabularySize);
        Assert.Equal("Hello world", tok.Decode(tok.Encode("Hello world", addBos: true)));
    }

    [Fact]
    public void MaxLengthTruncatesOrKeepsTheEnd()
    {
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromTiktoken("gpt2"));
        var all = tok.Encode("one two three four five");
        Assert.Equal([50256, .. all[..3]], tok.Encode("one two three four five", addBos: true, maxLength: 4));
        Assert.Equal([50256, .. all[^3..]], tok.Encode("one two three four five", addBos: true, maxLength: 4, overflow: OverflowMode.KeepEnd));
        Assert.Equal([50256], tok.Encode(null, addBos: true));
        Assert.Empty(tok.Encode(""));
    }

    [Fact]
    public void InvalidOptionsFailEarly()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { VocabularySize = 100 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { MinFrequency = 0 }));
        Assert.Throws<ArgumentException>(() => new ByteLevelBpeTrainer(new ByteLevelBpeTrainerOptions { SpecialTokens = ["x", "x"] }));
        Assert.Throws<ArgumentOutOfRangeException>(() => LoopRptTokenizer.Create(TokenizerSpec.FromTiktoken("no-such-encoding")));
        Assert.Throws<FileNotFoundException>(() => TokenizerSpec.FromSentencePiece("/nonexistent/x.model"));
        Assert.Throws<InvalidDataException>(() => TokenizerSpec.FromJson("{\"format_version\": 99}"));
    }
}
