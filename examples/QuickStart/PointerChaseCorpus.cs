using System.Text;
using LoopRpt.Data;
using LoopRpt.Tokenization;

namespace LoopRpt.QuickStart;

/// <summary>One generated line and where its answer is.</summary>
/// <param name="Text">The line, e.g. <c>b&gt;e;e&gt;a;a&gt;d;d&gt;b;?b&gt;&gt;&gt;=d</c> (no newline).</param>
/// <param name="AnswerIndex">Index of the answer symbol in <paramref name="Text"/> (the last character).</param>
/// <param name="Hops">k: how many times the map is applied to the start symbol (the number of <c>&gt;</c> in the query).</param>
public sealed record ChaseLine(string Text, int AnswerIndex, int Hops);

/// <summary>
/// Pointer chasing through a random map given in the line: <c>b&gt;e;e&gt;a;a&gt;d;d&gt;b;?b&gt;&gt;&gt;=d</c>.
/// The line lists a random map f over <see cref="Symbols"/> letters (each letter once as a source, in shuffled order,
/// never mapped to itself); the query <c>?x</c> followed by k <c>&gt;</c> asks for f applied k times to x. Every hop is a
/// lookup whose key is the previous hop's result, so the hops are strictly sequential: a transformer needs at least one
/// attention layer per hop (two for the first: one to attach each target to its source), and a looped model can spend a
/// loop per hop. The answer is the only token that needs the computation; the map's targets are random, so nothing else
/// in the line is predictable beyond its syntax.
/// Deterministic for a seed (System.Random with a fixed seed, which .NET keeps stable).
/// </summary>
public static class PointerChaseCorpus
{
    /// <summary>Letters in a map (and so the edges in a line).</summary>
    public const int Symbols = 8;
    private const string Alphabet = "abcdefghijklmnopqrstuvwxyz";

    /// <summary>One line with <paramref name="hops"/> hops.</summary>
    public static ChaseLine Line(Random rng, int hops, int symbols = Symbols)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(hops, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(symbols, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(symbols, Alphabet.Length);
        var letters = Alphabet.OrderBy(_ => rng.Next()).Take(symbols).ToArray();
        var map = new Dictionary<char, char>(symbols);
        foreach (var x in letters)
        {
            char y;
            do y = letters[rng.Next(symbols)]; while (y == x);
            map[x] = y;
        }
        var sb = new StringBuilder();
        foreach (var x in letters.OrderBy(_ => rng.Next())) sb.Append(x).Append('>').Append(map[x]).Append(';');
        char start = letters[rng.Next(symbols)], answer = start;
        for (int i = 0; i < hops; i++) answer = map[answer];
        sb.Append('?').Append(start).Append('>', hops).Append('=');
        int index = sb.Length;
        sb.Append(answer);
        return new ChaseLine(sb.ToString(), index, hops);
    }

    /// <summary><paramref name="countPerHop"/> lines for each k in 1..<paramref name="maxHops"/>, from <paramref name="seed"/>.</summary>
    public static IReadOnlyList<ChaseLine> Lines(int countPerHop, int maxHops, int seed, int symbols = Symbols)
    {
        var rng = new Random(seed);
        return Enumerable.Range(1, maxHops).SelectMany(k => Enumerable.Range(0, countPerHop).Select(_ => Line(rng, k, symbols))).ToArray();
    }
}

/// <summary>
/// Training batches of freshly generated pointer-chasing lines, one line per row (left-aligned, padded), a pure function
/// of (seed, step, micro-step) so that resume is exact. The hop count of each line is drawn uniformly from 1..kmax,
/// where kmax grows from 1 to <c>MaxHops</c> over the first <c>CurriculumSteps</c> steps (a curriculum over k).
/// <para>Loss weighting: with <c>AnswerOnly</c> only the answer symbol carries a target (the map's random letters carry
/// no learnable signal and would add gradient noise); otherwise every next token does.</para>
/// </summary>
public sealed class ChaseBatchSource : ITokenBatchSource
{
    private readonly LoopRptTokenizer _tokenizer;
    private readonly long _seed;
    private readonly int _maxHops, _symbols;
    private readonly long _curriculumSteps;
    private readonly bool _answerOnly;

    public ChaseBatchSource(LoopRptTokenizer tokenizer, int batchSize, int maxHops, long curriculumSteps, bool answerOnly, long seed, int symbols = PointerChaseCorpus.Symbols)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxHops, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(curriculumSteps);
        _tokenizer = tokenizer;
        BatchSize = batchSize;
        _maxHops = maxHops;
        _symbols = symbols;
        _curriculumSteps = curriculumSteps;
        _answerOnly = answerOnly;
        _seed = seed;
        SequenceLength = LineLength(symbols, maxHops);         // end-of-text + the line minus its answer as inputs
    }

    public int BatchSize { get; }
    public int SequenceLength { get; }

    /// <summary>Characters in a line with <paramref name="hops"/> hops.</summary>
    public static int LineLength(int symbols, int hops) => 4 * symbols + 3 + hops;

    /// <summary>kmax at <paramref name="step"/>: 1 at step 0, <c>MaxHops</c> from <c>CurriculumSteps</c> on.</summary>
    public int MaxHopsAt(long step) => _curriculumSteps == 0 ? _maxHops : (int)Math.Min(_maxHops, 1 + step * _maxHops / _curriculumSteps);

    public TokenBatch GetBatch(long step, int microStep)
    {
        var rng = new Random(Seeds.Mix32(_seed, step, microStep));
        int kmax = MaxHopsAt(step);
        var lines = Enumerable.Range(0, BatchSize).Select(_ => PointerChaseCorpus.Line(rng, 1 + rng.Next(kmax), _symbols)).ToArray();
        return Batch(_tokenizer, lines, SequenceLength, _answerOnly);
    }

    /// <summary>One row per line: inputs = end-of-text + the line without its answer (padded with end-of-text), targets = the next symbols (answer only, or all).</summary>
    public static TokenBatch Batch(LoopRptTokenizer tokenizer, IReadOnlyList<ChaseLine> lines, int sequenceLength, bool answerOnly)
    {
        int eot = tokenizer.EosTokenId!.Value;
        var inputs = new long[lines.Count * sequenceLength];
        var targets = new long[inputs.Length];
        Array.Fill(inputs, eot);
        Array.Fill(targets, TokenBatch.IgnoreIndex);
        for (int b = 0; b < lines.Count; b++)
        {
            var ids = tokenizer.Encode(lines[b].Text);
            if (ids.Length != lines[b].Text.Length)
                throw new InvalidOperationException($"The tokenizer must map one character to one token; '{lines[b].Text}' became {ids.Length} tokens.");
            if (ids.Length > sequenceLength) throw new ArgumentException($"Line {b} has {ids.Length} tokens; at most {sequenceLength} fit.", nameof(lines));
            // Inputs: [eot, c0, ..., c_{n-2}] (the answer c_{n-1} is only a target); the input at position i predicts c_i.
            for (int i = 0; i + 1 < ids.Length; i++) inputs[b * sequenceLength + i + 1] = ids[i];
            for (int i = 0; i < ids.Length; i++)
                if (!answerOnly || i == lines[b].AnswerIndex) targets[b * sequenceLength + i] = ids[i];
        }
        return new TokenBatch(inputs, targets, lines.Count, sequenceLength);
    }
}
