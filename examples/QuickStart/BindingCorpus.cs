using System.Text;

namespace LoopRpt.QuickStart;

/// <summary>One generated line and where its answer is.</summary>
/// <param name="Text">The line, e.g. <c>d=3;k=d+4;a=k*2;?a=4</c> (no newline).</param>
/// <param name="AnswerIndex">Index of the answer digit in <paramref name="Text"/>.</param>
/// <param name="Depth">Operations between the constant and the queried variable (0: the constant itself).</param>
public sealed record BindingLine(string Text, int AnswerIndex, int Depth);

/// <summary>
/// Variable-binding chains whose answer needs several computation steps, so extra loops can help:
/// <c>d=3;k=d+4;a=k*2;?a=4</c>. A chain starts from a digit and applies up to <see cref="MaxDepth"/> operations
/// (+, -, * modulo 10); a second, unrelated chain is interleaved as a distractor; the query asks one variable of either
/// chain. The answer digit is the only token that cannot be copied: it takes <c>Depth</c> dependent steps to compute.
/// Deterministic for a seed (System.Random with a fixed seed, which .NET keeps stable).
/// </summary>
public static class BindingCorpus
{
    /// <summary>Longest chain of operations.</summary>
    public const int MaxDepth = 3;
    private const string Names = "abcdefghjkmnpqrstuvwxyz";

    /// <summary>One line.</summary>
    public static BindingLine Line(Random rng)
    {
        var names = Names.OrderBy(_ => rng.Next()).Take(2 * (MaxDepth + 1)).ToArray();
        var chains = new List<(string Name, string Statement, int Value)>[2];
        for (int c = 0; c < 2; c++)
        {
            int length = rng.Next(MaxDepth + 1);                      // operations after the constant: 0..MaxDepth
            int value = rng.Next(10);
            var chain = new List<(string, string, int)> { (names[c * (MaxDepth + 1)].ToString(), $"{names[c * (MaxDepth + 1)]}={value}", value) };
            for (int i = 1; i <= length; i++)
            {
                string name = names[c * (MaxDepth + 1) + i].ToString(), prev = chain[^1].Item1;
                int operand = 1 + rng.Next(9);
                char op = "+-*"[rng.Next(3)];
                value = op switch { '+' => (value + operand) % 10, '-' => (value - operand + 10) % 10, _ => value * operand % 10 };
                chain.Add((name, $"{name}={prev}{op}{operand}", value));
            }
            chains[c] = chain;
        }
        // Interleave the two chains, each in order.
        var statements = new List<string>();
        int[] next = [0, 0];
        while (next[0] < chains[0].Count || next[1] < chains[1].Count)
        {
            int c = next[0] == chains[0].Count ? 1 : next[1] == chains[1].Count ? 0 : rng.Next(2);
            statements.Add(chains[c][next[c]++].Statement);
        }
        int qc = rng.Next(2);
        int depth = chains[qc].Count - 1 - (rng.Next(3) == 0 ? rng.Next(chains[qc].Count) : 0);    // mostly the chain's end
        var (qname, _, answer) = chains[qc][depth];
        var sb = new StringBuilder(string.Join(";", statements)).Append(";?").Append(qname).Append('=');
        int index = sb.Length;
        sb.Append(answer);
        return new BindingLine(sb.ToString(), index, depth);
    }

    /// <summary><paramref name="count"/> lines from <paramref name="seed"/>.</summary>
    public static IReadOnlyList<BindingLine> Lines(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Line(rng)).ToArray();
    }
}
