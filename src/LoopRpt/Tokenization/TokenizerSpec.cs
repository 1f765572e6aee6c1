using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace LoopRpt.Tokenization;

/// <summary>Where a tokenizer comes from.</summary>
public enum TokenizerKind
{
    /// <summary>A byte-level BPE vocabulary learned at fit time by <see cref="ByteLevelBpeTrainer"/>.</summary>
    TrainedBpe,
    /// <summary>A pretrained tiktoken encoding shipped with Microsoft.ML.Tokenizers (gpt2, cl100k_base, o200k_base, ...).</summary>
    Tiktoken,
    /// <summary>A BPE vocab.json + merges.txt pair (byte-level, GPT-2 pre-tokenization).</summary>
    BpeFiles,
    /// <summary>A SentencePiece <c>.model</c> file (BPE or unigram).</summary>
    SentencePiece,
}

/// <summary>
/// A self-contained, JSON-serializable description of a tokenizer: everything needed to rebuild it in another process.
/// File-based tokenizers embed the file contents, so an ML.NET model zip does not depend on the original files.
/// Format history: version 1 — kind, name, vocab/merges/specials (TrainedBpe, BpeFiles), model_base64 (SentencePiece).
/// </summary>
public sealed class TokenizerSpec
{
    /// <summary>The format version this library writes (and the highest it reads).</summary>
    public const int CurrentVersion = 1;

    /// <summary>Format version of this description; <see cref="FromJson"/> refuses one outside 1 to <see cref="CurrentVersion"/>.</summary>
    [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = CurrentVersion;
    /// <summary>Where the tokenizer comes from; selects which of the other fields are used.</summary>
    [JsonPropertyName("kind")] public TokenizerKind Kind { get; set; }
    /// <summary>Tiktoken encoding or model name.</summary>
    [JsonPropertyName("name")] public string? Name { get; set; }
    /// <summary>Token → id (TrainedBpe, BpeFiles; special tokens included).</summary>
    [JsonPropertyName("vocab")] public Dictionary<string, int>? Vocabulary { get; set; }
    /// <summary>"left right" merges in rank order (TrainedBpe, BpeFiles).</summary>
    [JsonPropertyName("merges")] public List<string>? Merges { get; set; }
    /// <summary>Special tokens, each kept whole (TrainedBpe, BpeFiles).</summary>
    [JsonPropertyName("special_tokens")] public List<string>? SpecialTokens { get; set; }
    /// <summary>SentencePiece model bytes, base64.</summary>
    [JsonPropertyName("model_base64")] public string? ModelBase64 { get; set; }

    private static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>The description as JSON (null fields omitted, the kind by name).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The description as a JSON object, e.g. to embed in meta.json.</summary>
    public JsonObject ToJsonObject() => JsonNode.Parse(ToJson())!.AsObject();

    /// <summary>Parses a description; unknown versions and malformed JSON fail with <see cref="InvalidDataException"/>.</summary>
    public static TokenizerSpec FromJson(string json)
    {
        TokenizerSpec? spec;
        try { spec = JsonSerializer.Deserialize<TokenizerSpec>(json, Json); }
        catch (JsonException e) { throw new InvalidDataException($"The tokenizer description is not valid JSON: {e.Message}", e); }
        if (spec is null) throw new InvalidDataException("The tokenizer description is empty.");
        if (spec.FormatVersion < 1 || spec.FormatVersion > CurrentVersion)
            throw new InvalidDataException($"The tokenizer description has format_version {spec.FormatVersion}; this LoopRpt reads 1 to {CurrentVersion}.");
        return spec;
    }

    /// <summary>Describes a vocabulary trained by <see cref="ByteLevelBpeTrainer"/> (its tokens, merges and special tokens copied in).</summary>
    public static TokenizerSpec FromTrained(BpeVocabulary bpe) => new()
    {
        Kind = TokenizerKind.TrainedBpe,
        Vocabulary = bpe.Vocabulary.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal),
        Merges = bpe.Merges.Select(m => m.Left + " " + m.Right).ToList(),
        SpecialTokens = bpe.SpecialTokens.ToList(),
    };

    /// <summary>Describes a tiktoken encoding or model name shipped with Microsoft.ML.Tokenizers (gpt2, cl100k_base, o200k_base, ...).</summary>
    public static TokenizerSpec FromTiktoken(string name) => new() { Kind = TokenizerKind.Tiktoken, Name = name };

    /// <summary>Reads vocab.json and merges.txt (header lines starting with '#' are skipped).</summary>
    public static TokenizerSpec FromBpeFiles(string vocabPath, string mergesPath, IEnumerable<string>? specialTokens = null)
    {
        RequireFile(vocabPath, "vocab.json");
        RequireFile(mergesPath, "merges.txt");
        Dictionary<string, int>? vocab;
        try { vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath)); }
        catch (JsonException e) { throw new InvalidDataException($"'{vocabPath}' is not a vocab.json (a JSON object token → id): {e.Message}", e); }
        if (vocab is null || vocab.Count == 0) throw new InvalidDataException($"'{vocabPath}' holds no tokens.");
        var merges = File.ReadAllLines(mergesPath).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        var specials = specialTokens?.ToList() ?? (vocab.ContainsKey("<|endoftext|>") ? ["<|endoftext|>"] : []);
        return new() { Kind = TokenizerKind.BpeFiles, Vocabulary = vocab, Merges = merges, SpecialTokens = specials };
    }

    /// <summary>Reads a SentencePiece <c>.model</c> file and embeds its bytes, so the description no longer needs the file.</summary>
    public static TokenizerSpec FromSentencePiece(string modelPath)
    {
        RequireFile(modelPath, "SentencePiece model");
        return new() { Kind = TokenizerKind.SentencePiece, ModelBase64 = Convert.ToBase64String(File.ReadAllBytes(modelPath)) };
    }

    private static void RequireFile(string path, string what)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException($"The {what} path must be given.", nameof(path));
        if (!File.Exists(path)) throw new FileNotFoundException($"The {what} file '{path}' does not exist.", path);
    }
}
