using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace LoopRpt.Interop;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> holding a byte-level BPE model (GPT-2 / SmolLM / Ouro style), loaded into a
/// Microsoft.ML.Tokenizers <see cref="BpeTokenizer"/> with its added (special) tokens.
/// </summary>
/// <remarks>
/// Supported <c>tokenizer.json</c> parts (what released Ouro checkpoints use):
/// <list type="bullet">
/// <item><c>model</c>: <c>BPE</c> with <c>vocab</c> and <c>merges</c> (either <c>"a b"</c> strings or <c>["a", "b"]</c> pairs),
/// no dropout, no byte fallback.</item>
/// <item><c>pre_tokenizer</c>: <c>ByteLevel</c> (GPT-2 regex when <c>use_regex</c>), <c>Digits</c>, <c>Split</c> with a regex
/// pattern, and <c>Sequence</c> of these; <c>add_prefix_space</c> must be false.</item>
/// <item><c>normalizer</c>: none. <c>added_tokens</c>: matched verbatim (longest first) before pre-tokenization and encoded
/// to their ids; their <c>lstrip</c>/<c>rstrip</c>/<c>single_word</c> flags are not applied (released Ouro tokenizers set
/// them all false).</item>
/// </list>
/// The original JSON bytes are kept so that saving a model writes the file back unchanged.
/// </remarks>
public sealed class HfTokenizer
{
    /// <summary>The file name in a model directory.</summary>
    public const string FileName = "tokenizer.json";

    /// <summary>GPT-2's pre-tokenization regex, which the <c>ByteLevel</c> pre-tokenizer applies when <c>use_regex</c> is true.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Dictionary<int, string> _idToAdded;

    private HfTokenizer(BpeTokenizer tokenizer, IReadOnlyDictionary<string, int> addedTokens, IReadOnlySet<string> specialTokens, byte[] json, string source)
    {
        Tokenizer = tokenizer;
        AddedTokens = addedTokens;
        SpecialTokens = specialTokens;
        Json = json;
        Source = source;
        _idToAdded = addedTokens.ToDictionary(kv => kv.Value, kv => kv.Key);
        VocabularySize = Math.Max(tokenizer.Vocabulary.Count == 0 ? 0 : tokenizer.Vocabulary.Values.Max() + 1,
            addedTokens.Count == 0 ? 0 : addedTokens.Values.Max() + 1);
    }

    /// <summary>The Microsoft.ML.Tokenizers tokenizer (byte-level BPE; added tokens act as special tokens).</summary>
    public BpeTokenizer Tokenizer { get; }

    /// <summary>Every entry of <c>added_tokens</c>: content → id.</summary>
    public IReadOnlyDictionary<string, int> AddedTokens { get; }

    /// <summary>Contents of the added tokens marked <c>"special": true</c>.</summary>
    public IReadOnlySet<string> SpecialTokens { get; }

    /// <summary>The file's bytes as read; <see cref="Save"/> writes them back unchanged.</summary>
    public ReadOnlyMemory<byte> Json { get; }

    /// <summary>Where the tokenizer was read from (a path, or a caller-given name).</summary>
    public string Source { get; }

    /// <summary>One more than the largest id in the vocabulary or the added tokens.</summary>
    public int VocabularySize { get; }

    /// <summary>The id of a vocabulary or added token, or null when absent.</summary>
    public int? TokenToId(string token)
        => AddedTokens.TryGetValue(token, out var id) ? id : Tokenizer.Vocabulary.TryGetValue(token, out id) ? id : null;

    /// <summary>The added token with this id, or null when the id is not an added token.</summary>
    public string? AddedTokenOf(int id) => _idToAdded.TryGetValue(id, out var s) ? s : null;

    /// <summary>Encodes text to ids; added tokens written in the text are encoded to their ids.</summary>
    public IReadOnlyList<int> Encode(string text) => Tokenizer.EncodeToIds(text);

    /// <summary>Decodes ids to text, special tokens included.</summary>
    public string Decode(IEnumerable<int> ids) => Tokenizer.Decode(ids, considerSpecialTokens: true);

    /// <summary>Writes the original <c>tokenizer.json</c> bytes to <paramref name="path"/>.</summary>
    public void Save(string path) => File.WriteAllBytes(path, Json.ToArray());

    /// <summary>Reads a <c>tokenizer.json</c>; throws <see cref="FileNotFoundException"/> or <see cref="InvalidDataException"/> naming the file.</summary>
    public static HfTokenizer Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file '{path}' does not exist.", path);
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses <c>tokenizer.json</c> bytes; <paramref name="source"/> names them in error messages.</summary>
    public static HfTokenizer Parse(byte[] json, string source = FileName)
    {
        InvalidDataException Bad(string what) => new($"'{source}' is not a supported tokenizer.json: {what}.");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw Bad($"invalid JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad("the root is not a JSON object");
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object) throw Bad("'model' is missing");
            var type = Str(model, "type");
            if (type is not null && type != "BPE") throw Bad($"model.type is '{type}', only 'BPE' is supported");
            if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
                throw Bad("model.dropout is set; BPE dropout is not supported");
            if (model.TryGetProperty("byte_fallback", out var fb) && fb.ValueKind == JsonValueKind.True)
                throw Bad("model.byte_fallback is true; only byte-level BPE is supported");
            if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
                throw Bad("model.vocab is missing");
            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var p in vocabElement.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out var id) || id < 0)
                    throw Bad($"model.vocab entry '{p.Name}' is not a non-negative integer id");
                vocab[p.Name] = id;
            }
            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var mergesElement))
                foreach (var m in mergesElement.EnumerateArray())
                    merges.Add(m.ValueKind switch
                    {
                        JsonValueKind.String => m.GetString()!,
                        JsonValueKind.Array when m.GetArrayLength() == 2 => $"{m[0].GetString()} {m[1].GetString()}",
                        _ => throw Bad($"model.merges entry {m.GetRawText()} is neither \"a b\" nor [\"a\", \"b\"]"),
                    });

            var added = new Dictionary<string, int>(StringComparer.Ordinal);
            var special = new HashSet<string>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var addedElement) && addedElement.ValueKind == JsonValueKind.Array)
                foreach (var a in addedElement.EnumerateArray())
                {
                    var content = Str(a, "content") ?? throw Bad("an added_tokens entry has no 'content'");
                    if (!a.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out var id) || id < 0)
                        throw Bad($"added token '{content}' has no valid 'id'");
                    added[content] = id;
                    if (a.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True) special.Add(content);
                }

            if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null)
                throw Bad($"normalizer '{Str(norm, "type")}' is not supported (only null)");

            var splitters = new List<Regex>();
            bool byteLevel = false;
            if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind != JsonValueKind.Null)
                AddPreTokenizer(pre, splitters, ref byteLevel, Bad);
            if (!byteLevel) throw Bad("the pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");

            var options = new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                SpecialTokens = added,
                PreTokenizer = new SequencePreTokenizer(splitters, added.Keys),
                UnknownToken = null,
            };
            BpeTokenizer tokenizer;
            try { tokenizer = BpeTokenizer.Create(options); }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"'{source}': Microsoft.ML.Tokenizers rejected the BPE model ({e.Message}).", e);
            }
            return new HfTokenizer(tokenizer, added, special, json, source);
        }
    }

    private static void AddPreTokenizer(JsonElement pre, List<Regex> splitters, ref bool byteLevel, Func<string, InvalidDataException> bad)
    {
        var type = Str(pre, "type");
        switch (type)
        {
            case "Sequence":
                if (!pre.TryGetProperty("pretokenizers", out var list)) throw bad("a Sequence pre_tokenizer has no 'pretokenizers'");
                foreach (var p in list.EnumerateArray()) AddPreTokenizer(p, splitters, ref byteLevel, bad);
                break;
            case "ByteLevel":
                if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
                    throw bad("ByteLevel.add_prefix_space = true is not supported");
                if (!pre.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False)
                    splitters.Add(new Regex(Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant));
                byteLevel = true;
                break;
            case "Digits":
                bool individual = pre.TryGetProperty("individual_digits", out var ind) && ind.ValueKind == JsonValueKind.True;
                // HF splits digits out as isolated pieces and keeps the text between them.
                splitters.Add(new Regex(individual ? @"\p{N}|[^\p{N}]+" : @"\p{N}+|[^\p{N}]+", RegexOptions.Compiled | RegexOptions.CultureInvariant));
                break;
            case "Split":
                var behavior = Str(pre, "behavior");
                if (behavior is not null && behavior != "Isolated") throw bad($"Split behavior '{behavior}' is not supported (only Isolated)");
                if (pre.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True) throw bad("Split.invert = true is not supported");
                if (!pre.TryGetProperty("pattern", out var pat)) throw bad("a Split pre_tokenizer has no 'pattern'");
                string pattern = Str(pat, "Regex") ?? (Str(pat, "String") is { } s ? Regex.Escape(s) : throw bad("Split.pattern is neither Regex nor String"));
                // Isolated: matches and the gaps between them both become pieces.
                splitters.Add(new Regex($"(?:{pattern})|(?:(?!(?:{pattern}))[\\s\\S])+", RegexOptions.Compiled | RegexOptions.CultureInvariant));
                break;
            default:
                throw bad($"pre_tokenizer type '{type}' is not supported");
        }
    }

    private static string? Str(JsonElement e, string name)
        => e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>
    /// HF's <c>Sequence</c> pre-tokenizer: added tokens are cut out first and kept whole, then each regex splits every piece
    /// left by the previous one. A regex's matches are the pieces; text it does not match is kept as a piece too.
    /// </summary>
    private sealed class SequencePreTokenizer : PreTokenizer
    {
        private readonly IReadOnlyList<Regex> _splitters;
        private readonly Regex? _added;

        public SequencePreTokenizer(IReadOnlyList<Regex> splitters, IEnumerable<string> addedTokens)
        {
            _splitters = splitters;
            var alternatives = addedTokens.OrderByDescending(t => t.Length).Select(Regex.Escape).ToList();
            _added = alternatives.Count == 0 ? null : new Regex(string.Join("|", alternatives), RegexOptions.Compiled | RegexOptions.CultureInvariant);
        }

        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => Split(text ?? string.Empty);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text.ToString());

        private List<(int, int)> Split(string text)
        {
            var result = new List<(int, int)>();
            int pos = 0;
            if (_added is not null)
                foreach (Match m in _added.Matches(text))
                {
                    SplitPlain(text, pos, m.Index - pos, 0, result);
                    result.Add((m.Index, m.Length));
                    pos = m.Index + m.Length;
                }
            SplitPlain(text, pos, text.Length - pos, 0, result);
            return result;
        }

        private void SplitPlain(string text, int offset, int length, int level, List<(int, int)> result)
        {
            if (length <= 0) return;
            if (level == _splitters.Count)
            {
                result.Add((offset, length));
                return;
            }
            int pos = offset, end = offset + length;
            var m = _splitters[level].Match(text, offset, length);
            while (m.Success && m.Length > 0)
            {
                SplitPlain(text, pos, m.Index - pos, level + 1, result);
                SplitPlain(text, m.Index, m.Length, level + 1, result);
                pos = m.Index + m.Length;
                m = m.NextMatch();
            }
            SplitPlain(text, pos, end - pos, level + 1, result);
        }
    }
}
