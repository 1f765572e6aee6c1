namespace InferenceBenchmark;

/// <summary>
/// Generated character-level text with easy and hard tokens, so a looped model learns to exit early on some:
/// a fixed lexicon of random words (letters inside a word are nearly determined once its first letters are seen),
/// words chained by a sparse random bigram table (the first letter of a word is hard), sentences ending in '.'.
/// Tokens: 0 = pad/newline, 1 = space, 2 = '.', 3..28 = 'a'..'z'.
/// </summary>
internal sealed class SyntheticCorpus
{
    public const int VocabSize = 32;
    private readonly string[] _words;
    private readonly int[][] _next;

    public SyntheticCorpus(int seed, int words = 400, int successors = 6)
    {
        var rng = new Random(seed);
        var set = new HashSet<string>();
        while (set.Count < words)
        {
            int len = 2 + rng.Next(7);
            set.Add(new string(Enumerable.Range(0, len).Select(_ => (char)('a' + rng.Next(26))).ToArray()));
        }
        _words = set.ToArray();
        _next = _words.Select(_ => Enumerable.Range(0, successors).Select(_ => rng.Next(words)).ToArray()).ToArray();
    }

    /// <summary>About <paramref name="length"/> tokens of text from a seeded random walk.</summary>
    public long[] Generate(int length, int seed)
    {
        var rng = new Random(seed);
        var tokens = new List<long>(length + 16);
        int word = rng.Next(_words.Length), inSentence = 0;
        while (tokens.Count < length)
        {
            foreach (char ch in _words[word]) tokens.Add(3 + (ch - 'a'));
            // Successors are Zipf-like: the first is the most likely continuation.
            int pick = (int)Math.Min(_next[word].Length - 1, Math.Floor(-Math.Log(1 - rng.NextDouble()) * 1.5));
            word = _next[word][pick];
            if (++inSentence >= 5 + rng.Next(8))
            {
                tokens.Add(2);
                inSentence = 0;
            }
            tokens.Add(1);
        }
        return tokens.Take(length).ToArray();
    }

    public static string Decode(IEnumerable<long> tokens)
        => new(tokens.Select(t => t switch { 0 => '\n', 1 => ' ', 2 => '.', _ => (char)('a' + t - 3) }).ToArray());
}
