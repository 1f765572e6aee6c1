namespace LoopRpt.Tokenization;

/// <summary>Options of <see cref="ByteLevelBpeTrainer"/>.</summary>
public sealed class ByteLevelBpeTrainerOptions
{
    /// <summary>Default values, shared by the options and the catalog's optional parameters.</summary>
    public static class Defaults
    {
        /// <summary>Default of <see cref="ByteLevelBpeTrainerOptions.VocabularySize"/>.</summary>
        public const int VocabularySize = 1024;
        /// <summary>Default of <see cref="ByteLevelBpeTrainerOptions.MinFrequency"/>.</summary>
        public const int MinFrequency = 2;
        /// <summary>The default special token (end of text; also BOS and document separator).</summary>
        public const string EndOfText = "<|endoftext|>";
    }

    /// <summary>Target vocabulary size including the special tokens and the 256 byte symbols. Default 1024.</summary>
    public int VocabularySize { get; set; } = Defaults.VocabularySize;

    /// <summary>Pairs seen fewer times than this are never merged (training stops early). Default 2.</summary>
    public int MinFrequency { get; set; } = Defaults.MinFrequency;

    /// <summary>Special tokens, given ids 0, 1, ... in this order. Default: <c>&lt;|endoftext|&gt;</c>.</summary>
    public IList<string> SpecialTokens { get; set; } = [Defaults.EndOfText];

    /// <summary>Checks the options (ML.NET's tokenizer options validate through it before training).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The vocabulary cannot hold the 256 bytes and the special tokens, or a count is out of range.</exception>
    public void Validate()
    {
        var specials = SpecialTokens ?? [];
        if (VocabularySize < 256 + specials.Count)
            throw new ArgumentOutOfRangeException(nameof(VocabularySize), VocabularySize,
                $"VocabularySize must be at least 256 (the byte alphabet) + {specials.Count} special tokens = {256 + specials.Count}.");
        if (MinFrequency < 1) throw new ArgumentOutOfRangeException(nameof(MinFrequency), MinFrequency, "MinFrequency must be at least 1.");
        if (specials.Any(string.IsNullOrEmpty)) throw new ArgumentException("Special tokens must be non-empty strings.", nameof(SpecialTokens));
        if (specials.Distinct(StringComparer.Ordinal).Count() != specials.Count) throw new ArgumentException("Special tokens must be distinct.", nameof(SpecialTokens));
    }
}

/// <summary>
/// Trains a byte-level BPE vocabulary (GPT-2 style) on a stream of texts — Microsoft.ML.Tokenizers can load BPE
/// models but cannot train one, and small looped models need small vocabularies.
/// <para>Algorithm: GPT-2 pre-tokenization; each pre-token becomes its UTF-8 bytes in the <see cref="ByteLevel"/>
/// alphabet; ids are special tokens first, then the 256 byte symbols in byte order, then merges in the order learned.
/// Each merge joins the most frequent adjacent pair (counted over distinct pre-tokens weighted by frequency); ties go
/// to the ordinally smallest (left, right) pair, so training is deterministic and can be checked by hand.</para>
/// </summary>
public sealed class ByteLevelBpeTrainer
{
    private readonly ByteLevelBpeTrainerOptions _options;

    /// <summary>A trainer with the given options (defaults when null); invalid options throw here, before any text is read.</summary>
    public ByteLevelBpeTrainer(ByteLevelBpeTrainerOptions? options = null)
    {
        _options = options ?? new ByteLevelBpeTrainerOptions();
        _options.Validate();
    }

    /// <summary>Learns merges from <paramref name="texts"/> (streamed once; null texts are skipped).</summary>
    public BpeVocabulary Train(IEnumerable<string?> texts, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var specials = (_options.SpecialTokens ?? []).ToList();
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in specials) vocab[s] = vocab.Count;
        for (int b = 0; b < 256; b++) vocab[ByteLevel.Char((byte)b).ToString()] = vocab.Count;

        // Distinct pre-tokens with counts.
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var text in texts)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (string.IsNullOrEmpty(text)) continue;
            foreach (var piece in ByteLevel.PreTokenize(text))
            {
                var encoded = ByteLevel.Encode(piece);
                counts[encoded] = counts.GetValueOrDefault(encoded) + 1;
            }
        }

        var words = counts.Select(kv => new Word(kv.Key.Select(c => c.ToString()).ToList(), kv.Value)).ToList();
        var pairCounts = new Dictionary<(string, string), long>();
        var pairWords = new Dictionary<(string, string), HashSet<int>>();
        for (int w = 0; w < words.Count; w++) AddPairs(words, w, pairCounts, pairWords, +1);

        var merges = new List<(string Left, string Right)>();
        while (vocab.Count < _options.VocabularySize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            (string, string)? best = null;
            long bestCount = 0;
            foreach (var (pair, count) in pairCounts)
            {
                if (count > bestCount || (count == bestCount && count > 0 && Compare(pair, best!.Value) < 0))
                {
                    best = pair;
                    bestCount = count;
                }
            }
            if (best is null || bestCount < _options.MinFrequency) break;
            var (left, right) = best.Value;
            var merged = left + right;
            merges.Add((left, right));
            if (!vocab.ContainsKey(merged)) vocab[merged] = vocab.Count;

            foreach (int w in pairWords[best.Value].ToList())
            {
                AddPairs(words, w, pairCounts, pairWords, -1);
                words[w] = words[w].Merge(left, right, merged);
                AddPairs(words, w, pairCounts, pairWords, +1);
            }
        }
        return new BpeVocabulary(vocab, merges, specials);
    }

    private static int Compare((string, string) a, (string, string) b)
    {
        int c = string.CompareOrdinal(a.Item1, b.Item1);
        return c != 0 ? c : string.CompareOrdinal(a.Item2, b.Item2);
    }

    private static void AddPairs(List<Word> words, int w, Dictionary<(string, string), long> pairCounts, Dictionary<(string, string), HashSet<int>> pairWords, int sign)
    {
        var word = words[w];
        for (int i = 0; i + 1 < word.Symbols.Count; i++)
        {
            var pair = (word.Symbols[i], word.Symbols[i + 1]);
            long c = pairCounts.GetValueOrDefault(pair) + sign * word.Count;
            if (c == 0)
            {
                pairCounts.Remove(pair);
                pairWords.Remove(pair);
                continue;
            }
            pairCounts[pair] = c;
            if (sign > 0)
            {
                if (!pairWords.TryGetValue(pair, out var set)) pairWords[pair] = set = [];
                set.Add(w);
            }
        }
    }

    private sealed record Word(List<string> Symbols, long Count)
    {
        public Word Merge(string left, string right, string merged)
        {
            var result = new List<string>(Symbols.Count);
            for (int i = 0; i < Symbols.Count; i++)
            {
                if (i + 1 < Symbols.Count && Symbols[i] == left && Symbols[i + 1] == right)
                {
                    result.Add(merged);
                    i++;
                }
                else result.Add(Symbols[i]);
            }
            return this with { Symbols = result };
        }
    }
}
