using System.Text;
using System.Text.Json.Nodes;
using LoopRpt.Interop;

namespace LoopRpt.Tests.Interop;

public sealed class HfTokenizerTests
{
    private static HfTokenizer Load(string? json = null) => HfTokenizer.Parse(Encoding.UTF8.GetBytes(json ?? ReferenceLayout.TokenizerJson()), "test/tokenizer.json");

    private static int Id(string token) => ReferenceLayout.Vocab()[token];

    private static int ByteId(char c) => ReferenceLayout.Vocab()[ReferenceLayout.ByteToUnicode()[c].ToString()];

    [Fact]
    public void EncodesWithMergesSpecialTokensAndIndividualDigits()
    {
        var tok = Load();
        var ids = tok.Encode("hello world<|im_end|>2024");
        // "hello" → he+ll → hell, o; " world" → Ġw+or → Ġwor, l, d; the added token whole; digits one by one.
        int[] expected = [Id("hell"), ByteId('o'), Id("Ġwor"), ByteId('l'), ByteId('d'), 2, ByteId('2'), ByteId('0'), ByteId('2'), ByteId('4')];
        Assert.Equal(expected, ids);
        Assert.Equal("hello world<|im_end|>2024", tok.Decode(ids));
    }

    [Fact]
    public void ByteLevelCoversAnyUtf8AndWhitespace()
    {
        var tok = Load();
        const string text = "Grüße,  naïve\tcafé — 東京!\n\n";
        var ids = tok.Encode(text);
        Assert.Equal(text, tok.Decode(ids));
        // Without merges applying, each UTF-8 byte is one token.
        var bytes = Encoding.UTF8.GetBytes("東");
        Assert.Equal(bytes.Select(b => ByteId((char)b)), tok.Encode("東"));
        // GPT-2 regex: "  x" keeps one space alone, then " x".
        Assert.Equal([ByteId(' '), ByteId(' '), ByteId('x')], tok.Encode("  x"));
    }

    [Fact]
    public void SpecialTokensAndLookups()
    {
        var tok = Load();
        Assert.Equal(1, tok.TokenToId("<|im_start|>"));
        Assert.Equal(2, tok.TokenToId("<|im_end|>"));
        Assert.Equal(0, tok.TokenToId("<|endoftext|>"));
        Assert.Null(tok.TokenToId("<|nope|>"));
        Assert.Equal("<|im_start|>", tok.AddedTokenOf(1));
        Assert.Contains("<|endoftext|>", tok.SpecialTokens);
        Assert.Equal(3 + 256 + ReferenceLayout.Merges.Length, tok.VocabularySize);
        Assert.Equal([1, Id("hell"), ByteId('o'), 2, 0], tok.Encode("<|im_start|>hello<|im_end|><|endoftext|>"));
    }

    [Fact]
    public void MergesAsStringsGiveTheSameIds()
    {
        var root = JsonNode.Parse(ReferenceLayout.TokenizerJson())!;
        root["model"]!["merges"] = new JsonArray(ReferenceLayout.Merges.Select(m => (JsonNode)m).ToArray());
        Assert.Equal(Load().Encode("hello world"), Load(root.ToJsonString()).Encode("hello world"));
    }

    [Fact]
    public void DigitsPreTokenizerDecidesWhetherNumbersMerge()
    {
        var root = JsonNode.Parse(ReferenceLayout.TokenizerJson())!;
        root["pre_tokenizer"] = JsonNode.Parse("""{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}""");
        // Without Digits, "2024" stays one piece and the "2 0" merge applies; with individual digits it cannot.
        var tok = Load(root.ToJsonString());
        Assert.Equal([Id("20"), ByteId('2'), ByteId('4')], tok.Encode("2024"));
        Assert.Equal([ByteId('2'), ByteId('0'), ByteId('2'), ByteId('4')], Load().Encode("2024"));
        Assert.Equal("a 12", tok.Decode(tok.Encode("a 12")));
    }

    [Fact]
    public void SaveWritesTheOriginalBytes()
    {
        var json = ReferenceLayout.TokenizerJson();
        var dir = ReferenceLayout.TempDir();
        try
        {
            var path = Path.Combine(dir, "tokenizer.json");
            File.WriteAllText(path, json);
            var tok = HfTokenizer.Load(path);
            Assert.Equal(path, tok.Source);
            var copy = Path.Combine(dir, "copy.json");
            tok.Save(copy);
            Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(copy));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("model", "{\"type\": \"WordPiece\", \"vocab\": {}}", "WordPiece")]
    [InlineData("normalizer", "{\"type\": \"NFC\"}", "NFC")]
    [InlineData("pre_tokenizer", "{\"type\": \"Whitespace\"}", "Whitespace")]
    [InlineData("pre_tokenizer", "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", "add_prefix_space")]
    public void UnsupportedPartsAreNamed(string key, string value, string expected)
    {
        var root = JsonNode.Parse(ReferenceLayout.TokenizerJson())!;
        root[key] = JsonNode.Parse(value);
        var e = Assert.Throws<InvalidDataException>(() => Load(root.ToJsonString()));
        Assert.Contains(expected, e.Message);
        Assert.Contains("test/tokenizer.json", e.Message);
    }

    [Fact]
    public void InvalidJsonAndMissingFileAreReported()
    {
        Assert.Contains("test/tokenizer.json", Assert.Throws<InvalidDataException>(() => Load("{ not json")).Message);
        Assert.Throws<FileNotFoundException>(() => HfTokenizer.Load("/nonexistent/tokenizer.json"));
    }
}
