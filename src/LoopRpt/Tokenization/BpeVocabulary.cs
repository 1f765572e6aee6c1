using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace LoopRpt.Tokenization;

/// <summary>
/// A trained byte-level BPE model: token → id, the merges in order, and the special tokens. Saves as the usual
/// <c>vocab.json</c> + <c>merges.txt</c> pair and loads into Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>.
/// </summary>
public sealed class BpeVocabulary
{
    /// <summary>A vocabulary from its parts: token → id (special tokens included), the merges in rank order, the special tokens.</summary>
    public BpeVocabulary(IReadOnlyDictionary<string, int> vocabulary, IReadOnlyList<(string Left, string Right)> merges, IReadOnlyList<string> specialTokens)
    {
        Vocabulary = vocabulary;
        Merges = merges;
        SpecialTokens = specialTokens;
    }

    /// <summary>Token (in the <see cref="ByteLevel"/> alphabet) → id, special tokens included.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary { get; }

    /// <summary>Merges in the order learned (rank 0 first).</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    /// <summary>The special tokens (e.g. <c>&lt;|endoftext|&gt;</c>), in id order; each is one token and never split.</summary>
    public IReadOnlyList<string> SpecialTokens { get; }

    /// <summary>Number of tokens, special tokens included.</summary>
    public int Count => Vocabulary.Count;

    /// <summary>vocab.json content (a JSON object token → id).</summary>
    public string VocabularyJson() => JsonSerializer.Serialize(Vocabulary.OrderBy(kv => kv.Value).ToDictionary(kv => kv.Key, kv => kv.Value));

    /// <summary>merges.txt content: a version header, then "left right" per line.</summary>
    public string MergesText()
    {
        var sb = new StringBuilder("#version: 0.2\n");
        foreach (var (l, r) in Merges) sb.Append(l).Append(' ').Append(r).Append('\n');
        return sb.ToString();
    }

    /// <summary>Writes <c>vocab.json</c> and <c>merges.txt</c> into <paramref name="directory"/>.</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "vocab.json"), VocabularyJson());
        File.WriteAllText(Path.Combine(directory, "merges.txt"), MergesText());
    }

    /// <summary>A byte-level <see cref="BpeTokenizer"/> with the GPT-2 pre-tokenizer and these special tokens.</summary>
    public BpeTokenizer CreateTokenizer() => (BpeTokenizer)LoopRptTokenizer.Create(TokenizerSpec.FromTrained(this)).Inner;
}
