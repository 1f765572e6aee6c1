using System.Text;

namespace LoopRptExperiment;

/// <summary>Character vocabulary: printable ASCII and newline; anything else maps to '?'.</summary>
internal sealed class CharVocab
{
    private readonly int[] _map = new int[128];
    private readonly List<char> _chars = [];

    public CharVocab(IEnumerable<char> alphabet)
    {
        Array.Fill(_map, -1);
        foreach (var c in alphabet.Distinct())
        {
            _map[c] = _chars.Count;
            _chars.Add(c);
        }
        if (_map['?'] < 0) { _map['?'] = _chars.Count; _chars.Add('?'); }
    }

    public static CharVocab Printable() => new(Enumerable.Range(32, 95).Select(i => (char)i).Append('\n'));

    public int Size => _chars.Count;

    public int Id(char c) => c < 128 && _map[c] >= 0 ? _map[c] : c == '\t' ? _map[' '] : _map['?'];

    public int[] Encode(string s) => s.Select(Id).ToArray();

    public string Alphabet => new(_chars.ToArray());
}

/// <summary>
/// Variable binding with pointer chasing, e.g. <c>a=3;e=7;b=a;f=e;c=b;?c=3;?f=7</c>: two alias chains with different
/// constants, their statements interleaved; the query asks a variable at depth k of its chain (k = 1: a constant), so the
/// answer needs k hops back through the definitions to know which constant it is — computation that extra loops can
/// supply. The other characters are mostly random (names, constants) and stay unpredictable.
/// </summary>
internal static class ArithmeticCorpus
{
    public const int MaxDepth = 4;
    private const string Names = "abcdefgh";

    public static CharVocab Vocab { get; } = new("abcdefgh0123456789=;?\n");

    /// <summary>A line, with the indices (within the line) of its answer digits and their query depths (1 = a constant).</summary>
    public static (string Line, List<(int Index, int Depth)> Answers) Line(Random rng)
    {
        var names = Names.OrderBy(_ => rng.Next()).ToArray();
        int la = 1 + rng.Next(MaxDepth), lb = 1 + rng.Next(MaxDepth);
        int va = rng.Next(10), vb = (va + 1 + rng.Next(9)) % 10;
        var chains = new[] { names[..la], names[la..(la + lb)] };
        var values = new[] { va, vb };
        var next = new[] { 0, 0 };
        var statements = new List<string>();
        while (next[0] < la || next[1] < lb)
        {
            int c = next[0] == la ? 1 : next[1] == lb ? 0 : rng.Next(2);
            int i = next[c]++;
            statements.Add(i == 0 ? $"{chains[c][0]}={values[c]}" : $"{chains[c][i]}={chains[c][i - 1]}");
        }
        // Up to three queries per line (more answer tokens to learn from), each naming a random variable of either chain.
        var sb = new StringBuilder(string.Join(";", statements));
        var answers = new List<(int Index, int Depth)>();
        int queries = 1 + rng.Next(3);
        for (int k = 0; k < queries; k++)
        {
            int qc = rng.Next(2), qi = rng.Next(chains[qc].Length);
            sb.Append(";?").Append(chains[qc][qi]).Append('=');
            answers.Add((sb.Length, qi + 1));
            sb.Append(values[qc]);
        }
        sb.Append('\n');
        return (sb.ToString(), answers);
    }

    public static string Text(int lines, int seed)
    {
        var rng = new Random(seed);
        var sb = new StringBuilder();
        for (int i = 0; i < lines; i++) sb.Append(Line(rng).Line);
        return sb.ToString();
    }
}

/// <summary>Real text: the Vim user manual shipped with the OS (char level).</summary>
internal static class TextCorpus
{
    public const string Directory = "/usr/share/vim/vim90/doc";

    public static string Load()
    {
        if (!System.IO.Directory.Exists(Directory))
            throw new DirectoryNotFoundException($"The real-text corpus '{Directory}' (Vim documentation) is not installed; run with --corpus arith.");
        var files = System.IO.Directory.GetFiles(Directory, "usr_*.txt").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        return string.Concat(files.Select(File.ReadAllText));
    }
}
