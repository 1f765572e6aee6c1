using System.Text.Json.Nodes;
using LoopRpt.Hosting;
using LoopRpt.Model;
using LoopRpt.Tests.Interop;
using LoopRpt.Tokenization;

namespace LoopRpt.Tests.Tokenization;

/// <summary>The one text codec of the CLI, the AI surface and the server (issue 16: it was written twice).</summary>
public class TextCodecTests
{
    private static readonly string[] Docs = ["the cat sat on the mat", "the dog sat on the log"];

    [Fact]
    public void CodecOfFunctionsAddsBosOnRequestAndFindsSingleTokens()
    {
        const string Letters = "abcdefghijklmnopqrstuvwxyz";
        var codec = TextCodec.Create(s => s.Select(c => Letters.IndexOf(c)).ToArray(), ids => string.Concat(ids.Where(i => i is >= 0 and < 26).Select(i => Letters[i])),
            bosTokenId: 26, eosTokenId: 27, "letters");
        Assert.Equal([2, 0, 1], codec.Encode("cab"));
        Assert.Equal([26, 2, 0, 1], codec.Encode("cab", addBos: true));
        Assert.Equal("cab", codec.Decode([26, 2, 0, 1, 27]));
        Assert.Equal(1, codec.TokenToId("b"));
        Assert.Null(codec.TokenToId("bc"));                      // two ids
        Assert.Equal((26, 27, "letters"), (codec.BosTokenId, codec.EosTokenId, codec.Description));

        var noBos = TextCodec.Create(s => [s.Length], _ => "", null, null, "lengths", tokenToId: _ => 99);
        Assert.Equal([3], noBos.Encode("abc", addBos: true));
        Assert.Equal(99, noBos.TokenToId("anything"));
        Assert.Throws<ArgumentNullException>(() => codec.Encode(null!));
    }

    [Fact]
    public void LoopRptTokenizerFileDescriptionAndHfTokenizerAgree()
    {
        var tokenizer = LoopRptTokenizer.Train(Docs, new ByteLevelBpeTrainerOptions { VocabularySize = 280 });
        var codec = TextCodec.From(tokenizer);
        const string text = "the cat sat on the log";
        Assert.Equal(tokenizer.Encode(text), codec.Encode(text));
        Assert.Equal(text, codec.Decode(codec.Encode(text)));
        Assert.Equal((tokenizer.BosTokenId, tokenizer.EosTokenId), (codec.BosTokenId, codec.EosTokenId));
        Assert.Contains($"({tokenizer.VocabularySize} tokens)", codec.Description);

        // meta.json description and tokenizer file give the same codec.
        Assert.Equal(codec.Encode(text, addBos: true), TextCodec.FromDescription(tokenizer.Spec.ToJsonObject()).Encode(text, addBos: true));
        var dir = Directory.CreateTempSubdirectory("looprpt-codec-").FullName;
        try
        {
            var spec = Path.Combine(dir, "tok.json");
            File.WriteAllText(spec, tokenizer.Spec.ToJson());
            Assert.Equal(codec.Encode(text), TextCodec.Load(spec, new OuroConfig()).Encode(text));

            // A Hugging Face tokenizer.json takes its special ids from the config.
            var hf = Path.Combine(dir, "tokenizer.json");
            File.WriteAllText(hf, ReferenceLayout.TokenizerJson());
            var hfCodec = TextCodec.Load(hf, new OuroConfig { BosTokenId = 1, EosTokenId = 2 });
            Assert.Equal((1, 2), (hfCodec.BosTokenId, hfCodec.EosTokenId));
            Assert.StartsWith("tokenizer.json", hfCodec.Description);
            Assert.Equal(1, hfCodec.Encode("a", addBos: true)[0]);

            var garbage = Path.Combine(dir, "garbage.json");
            File.WriteAllText(garbage, "{\"kind\": 42}");
            Assert.Contains("is neither a LoopRpt tokenizer file", Assert.Throws<InvalidDataException>(() => TextCodec.Load(garbage, new OuroConfig())).Message);
            Assert.Throws<FileNotFoundException>(() => TextCodec.Load(Path.Combine(dir, "missing.json"), new OuroConfig()));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        Assert.Throws<InvalidDataException>(() => TextCodec.FromDescription(new JsonObject { ["kind"] = "no-such-kind" }));
    }

    [Fact]
    public void HostingTokenizersBecomeCodecs()
    {
        var bytes = new ByteTokenizerService().ToTextCodec();
        Assert.Equal((256, 256), (bytes.BosTokenId, bytes.EosTokenId));           // no BOS: end-of-text starts documents (DocumentTokens)
        Assert.Equal([256, 104, 195, 169], bytes.Encode("hé", addBos: true));
        Assert.Equal(104, bytes.TokenToId("h"));
        Assert.Null(bytes.TokenToId("é"));                        // two UTF-8 bytes
        var described = TextCodec.FromDescription(new ByteTokenizerService().Describe());
        Assert.Equal(bytes.Encode("hé", addBos: true), described.Encode("hé", addBos: true));
        Assert.True(ByteTokenizer.Describes(new JsonObject { ["kind"] = "bytes" }));
        Assert.False(ByteTokenizer.Describes(new JsonObject { ["kind"] = 3 }));
    }
}
