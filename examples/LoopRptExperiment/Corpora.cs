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
/// Variable-binding chains where the answer needs several computation steps, e.g. <c>d=7;q=d+3;h=q-5;?h=5</c>:
/// the queried variable's value is the first constant followed by depth-1 additions/subtractions mod 10.
/// </summary>
internal static class ArithmeticCorpus
{
    public const int MaxDepth = 4;

    public static CharVocab Vocab { get; } = new("abcdefghijklmnopqrstuvwxyz0123456789=+-;?\n");

    /// <summary>A line, with the index (within the line) of the answer digit and the query depth (1 = a constant).</summary>
    public static (string Line, int AnswerIndex, int Depth) Line(Random rng)
    {
        int length = 1 + rng.Next(MaxDepth);
        var names = "abcdefghijklmnopqrstuvwxyz".OrderBy(_ => rng.Next()).Take(length).ToArray();
        var values = new int[length];
        var sb = new StringBuilder();
        values[0] = rng.Next(10);
        sb.Append(names[0]).Append('=').Append(values[0]);
        for (int i = 1; i < length; i++)
        {
            int d = rng.Next(10);
            bool plus = rng.Next(2) == 0;
            values[i] = ((values[i - 1] + (plus ? d : -d)) % 10 + 10) % 10;
            sb.Append(';').Append(names[i]).Append('=').Append(names[i - 1]).Append(plus ? '+' : '-').Append(d);
        }
        int q = rng.Next(length);
        sb.Append(";?").Append(names[q]).Append('=');
        int answer = sb.Length;
        sb.Append(values[q]).Append('\n');
        return (sb.ToString(), answer, q + 1);
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
