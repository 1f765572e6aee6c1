using System.Text;
using LoopRpt.Data;
using LoopRpt.Tokenization;

namespace LoopRpt.QuickStart;

/// <summary>One query of a line: where its answer is and how many hops it takes.</summary>
/// <param name="AnswerIndex">Index of the answer letter in the line's text.</param>
/// <param name="Hops">k: pointers followed from the query's letter to its chain's end.</param>
public sealed record ChaseQuery(int AnswerIndex, int Hops);

/// <summary>One generated line: a map and its queries.</summary>
/// <param name="Text">The line, e.g. <c>fa;mk;af;ch;kc;hh;?mH;?fF</c> (no newline).</param>
/// <param name="Queries">The queries in line order.</param>
/// <param name="Edges">Every edge of the map: the index of its last character, its chain's end, and its hops to that end
/// (0 for the end's own self-loop edge).</param>
public sealed record ChaseLine(string Text, IReadOnlyList<ChaseQuery> Queries, IReadOnlyList<ChaseEdge> Edges);

/// <summary>One edge of a line's map (see <see cref="ChaseLine.Edges"/>).</summary>
public sealed record ChaseEdge(int LastIndex, char End, int Hops);

/// <summary>
/// Pointer chasing to the end of a chain: <c>fa;mk;af;ch;kc;hh;...;?m=h;?f=f</c>. A line lists, in shuffled order, the
/// edges of <c>chains</c> disjoint chains of <c>chainLength</c> letters each; an edge <c>xy</c> says "x points to y", and the
/// last letter of each chain points to itself (<c>hh</c>). A query <c>?x</c> asks for the end of x's chain, written in
/// upper case right after x: the fixed point of following the pointers from x, k hops away (1 ≤ k ≤ chainLength − 1).
/// The answer is predicted at the query letter itself, so the pointer starts in that position's own embedding. Every hop is a lookup whose key is
/// the previous hop's result, so the hops are strictly sequential: a transformer needs an attention layer per hop, and a
/// looped model can run one lookup per loop until the pointer stops moving (which is also when more loops stop helping,
/// so the exit gate can learn to stop there). Each edge is one token (the tokenizer merges every letter pair), so a hop
/// is a single attention lookup. The answers are the only tokens that need the computation; every other token is random
/// or fixed syntax. Several queries per line (distinct start letters) give several supervised answers per map.
/// <para>The QuickStart's form (<c>endFirst</c> and <see cref="ChaseBatchSource"/>'s <c>edgeLabels</c>): each chain is listed
/// from its end backwards, so every edge comes after its target's edge, and every edge token is trained to name its
/// chain's end. "The end of my chain is the end of my target's chain" is then computable at every edge under causal
/// attention, one attention step per loop, and the labels supervise the intermediate estimates the next loop reads;
/// without them no variant learned to chain two lookups (docs/experiment.md §1).</para>
/// Deterministic for a seed (System.Random with a fixed seed, which .NET keeps stable).
/// </summary>
public static class PointerChaseCorpus
{
    /// <summary>Default alphabet size (letters a, b, ...).</summary>
    public const int Letters = 16;
    /// <summary>Default chains per line.</summary>
    public const int Chains = 3;
    /// <summary>Default queries per line.</summary>
    public const int Queries = 4;
    private const string Alphabet = "abcdefghijklmnopqrstuvwxyz";

    /// <summary>
    /// One line whose chains have <paramref name="maxHops"/> + 1 letters, with one query per entry of <paramref name="hops"/>
    /// (each 1..<paramref name="maxHops"/>).
    /// </summary>
    public static ChaseLine Line(Random rng, IReadOnlyList<int> hops, int maxHops, int letters = Letters, int chains = Chains, bool upperCaseAnswers = true, bool endFirst = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxHops, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(chains, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(letters, Alphabet.Length);
        int length = maxHops + 1;
        if (chains * length > letters) throw new ArgumentOutOfRangeException(nameof(letters), letters, $"{chains} chains of {length} letters need at least {chains * length} letters.");
        if (hops.Count < 1 || hops.Count > chains * maxHops || hops.Any(k => k < 1 || k > maxHops))
            throw new ArgumentOutOfRangeException(nameof(hops), $"Between 1 and {chains * maxHops} queries, each with 1 to {maxHops} hops.");
        var used = Alphabet[..letters].OrderBy(_ => rng.Next()).Take(chains * length).ToArray();
        var edges = new List<string>(used.Length);
        for (int c = 0; c < chains; c++)
            for (int i = 0; i < length; i++)
                edges.Add($"{used[c * length + i]}{used[c * length + Math.Min(i + 1, length - 1)]}");
        var listed = endFirst ? EndFirst(rng, edges, chains, length) : edges.OrderBy(_ => rng.Next()).ToList();
        var sb = new StringBuilder(string.Join(";", listed));
        var edgeInfo = listed.Select((e, i) =>
        {
            int at = Array.IndexOf(used, e[0]), c = at / length;
            return new ChaseEdge(3 * i + 1, used[c * length + length - 1], length - 1 - at % length);
        }).ToArray();
        // Query starts: letter i of chain c is length - 1 - i hops from the chain's end; starts are distinct.
        var taken = new HashSet<int>();
        var queries = new List<ChaseQuery>(hops.Count);
        foreach (int k in hops)
        {
            int c, start;
            do { c = rng.Next(chains); start = c * length + (length - 1 - k); } while (!taken.Add(start));
            sb.Append(";?").Append(used[start]);
            queries.Add(new ChaseQuery(sb.Length, k));
            char end = used[c * length + length - 1];
            sb.Append(upperCaseAnswers ? char.ToUpperInvariant(end) : end);
        }
        return new ChaseLine(sb.ToString(), queries, edgeInfo);
    }

    /// <summary>
    /// The edges with each chain listed from its end backwards (so every edge comes after the edge of its target), the
    /// chains interleaved at random.
    /// </summary>
    private static List<string> EndFirst(Random rng, List<string> edges, int chains, int length)
    {
        var next = Enumerable.Repeat(length - 1, chains).ToArray();
        var order = new List<string>(edges.Count);
        while (order.Count < edges.Count)
        {
            int c;
            do c = rng.Next(chains); while (next[c] < 0);
            order.Add(edges[c * length + next[c]--]);
        }
        return order;
    }

    /// <summary>
    /// <paramref name="count"/> lines of <paramref name="queries"/> queries each, hop counts drawn uniformly from
    /// 1..<paramref name="maxHops"/> (at most <paramref name="chains"/> queries of one hop count per line), from <paramref name="seed"/>.
    /// </summary>
    public static IReadOnlyList<ChaseLine> Lines(int count, int maxHops, int seed, int letters = Letters, int chains = Chains, int queries = Queries, bool upperCaseAnswers = true, bool endFirst = false)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Line(rng, Hops(rng, queries, maxHops, maxHops, chains), maxHops, letters, chains, upperCaseAnswers, endFirst)).ToArray();
    }

    /// <summary>Hop counts for one line's queries: uniform in 1..<paramref name="kmax"/>, no count more often than there are chains.</summary>
    public static int[] Hops(Random rng, int queries, int kmax, int maxHops, int chains)
    {
        var hops = new int[Math.Min(queries, chains * kmax)];
        var uses = new int[maxHops + 1];
        for (int q = 0; q < hops.Length; q++)
        {
            int k;
            do k = 1 + rng.Next(kmax); while (uses[k] == chains);
            uses[k]++;
            hops[q] = k;
        }
        return hops;
    }

    /// <summary>
    /// The tokenizer: byte-level BPE whose merges are exactly the letter pairs of the alphabet, so an edge <c>xy</c> is one
    /// token and every other character (a lone letter, an upper-case answer, <c>;</c>, <c>?</c>) is one token; without
    /// <paramref name="pairTokens"/>, no merges: every character is one token.
    /// </summary>
    public static LoopRptTokenizer Tokenizer(int letters = Letters, bool pairTokens = true)
    {
        var alphabet = Alphabet[..letters];
        var pairs = alphabet.SelectMany(x => alphabet.Select(y => $"{x}{y}")).ToArray();
        return LoopRptTokenizer.Train(pairs, new ByteLevelBpeTrainerOptions { VocabularySize = 257 + (pairTokens ? pairs.Length : 0), MinFrequency = 1 });
    }

    /// <summary>Tokens of a line's inputs (end-of-text + the line without its last answer), the same for every line of a shape.</summary>
    public static int InputTokens(int chains, int maxHops, int queries, bool pairTokens)
        => (pairTokens ? 2 : 3) * chains * (maxHops + 1) - 1 + 4 * queries;
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
    private readonly int _maxHops, _letters, _chains, _queries;
    private readonly bool _upperCaseAnswers;
    private readonly long _curriculumSteps;
    private readonly bool _answerOnly;
    private readonly bool _endFirst;
    private readonly bool _edgeLabels;

    public ChaseBatchSource(LoopRptTokenizer tokenizer, int batchSize, int maxHops, long curriculumSteps, bool answerOnly, long seed,
                            int letters = PointerChaseCorpus.Letters, int chains = PointerChaseCorpus.Chains, int queries = PointerChaseCorpus.Queries,
                            bool pairTokens = true, bool upperCaseAnswers = true, bool endFirst = false, bool edgeLabels = false)
    {
        _endFirst = endFirst;
        _edgeLabels = edgeLabels;
        if (edgeLabels && !(pairTokens && upperCaseAnswers)) throw new ArgumentException("Edge labels need pair tokens and upper-case answers.", nameof(edgeLabels));
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxHops, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(curriculumSteps);
        _tokenizer = tokenizer;
        BatchSize = batchSize;
        _maxHops = maxHops;
        _letters = letters;
        _chains = chains;
        _queries = queries;
        if (pairTokens && !upperCaseAnswers)
            throw new ArgumentException("Lower-case answers need one token per character: with pair tokens an answer would merge with its query letter.", nameof(upperCaseAnswers));
        _upperCaseAnswers = upperCaseAnswers;
        _curriculumSteps = curriculumSteps;
        _answerOnly = answerOnly;
        _seed = seed;
        SequenceLength = PointerChaseCorpus.InputTokens(chains, maxHops, queries, pairTokens);
    }

    public int BatchSize { get; }
    public int SequenceLength { get; }

    /// <summary>kmax at <paramref name="step"/>: 1 at step 0, <c>MaxHops</c> from <c>CurriculumSteps</c> on.</summary>
    public int MaxHopsAt(long step) => _curriculumSteps == 0 ? _maxHops : (int)Math.Min(_maxHops, 1 + step * _maxHops / _curriculumSteps);

    public TokenBatch GetBatch(long step, int microStep)
    {
        var rng = new Random(Seeds.Mix32(_seed, step, microStep));
        int kmax = MaxHopsAt(step);
        var lines = Enumerable.Range(0, BatchSize)
            .Select(_ => PointerChaseCorpus.Line(rng, PointerChaseCorpus.Hops(rng, _queries, kmax, _maxHops, _chains), _maxHops, _letters, _chains, _upperCaseAnswers, _endFirst)).ToArray();
        return Batch(_tokenizer, lines, SequenceLength, _answerOnly ? (_ => true) : null, _edgeLabels);
    }

    /// <summary>
    /// One row per line: inputs = end-of-text + the line without its last answer (padded with end-of-text); targets = the
    /// answers of the queries that <paramref name="answers"/> selects, or every next symbol when it is null.
    /// </summary>
    public static TokenBatch Batch(LoopRptTokenizer tokenizer, IReadOnlyList<ChaseLine> lines, int sequenceLength, Func<ChaseQuery, bool>? answers, bool edgeLabels = false)
    {
        int eot = tokenizer.EosTokenId!.Value;
        var inputs = new long[lines.Count * sequenceLength];
        var targets = new long[inputs.Length];
        Array.Fill(inputs, eot);
        Array.Fill(targets, TokenBatch.IgnoreIndex);
        for (int b = 0; b < lines.Count; b++)
        {
            var text = lines[b].Text;
            var ids = tokenizer.Encode(text);
            if (ids.Length > sequenceLength) throw new ArgumentException($"Line {b} has {ids.Length} tokens; at most {sequenceLength} fit.", nameof(lines));
            // Inputs: [eot, t0, ..., t_{n-2}] (the last answer t_{n-1} is only a target); the input at position i predicts t_i.
            for (int i = 0; i + 1 < ids.Length; i++) inputs[b * sequenceLength + i + 1] = ids[i];
            if (answers is null)
                for (int i = 0; i < ids.Length; i++) targets[b * sequenceLength + i] = ids[i];
            else
                foreach (var q in lines[b].Queries.Where(answers))
                {
                    int i = tokenizer.Encode(text[..q.AnswerIndex]).Length;       // no merge joins a letter and an upper-case answer
                    targets[b * sequenceLength + i] = ids[i];
                }
            // Edge labels: the input position holding edge xy (one pair token) is also trained to name its chain's end. The
            // label is a target only, never an input, so no later position can read it.
            if (edgeLabels)
                foreach (var e in lines[b].Edges)
                {
                    int p = tokenizer.Encode(text[..(e.LastIndex + 1)]).Length;     // input position of the edge token (inputs are shifted by one)
                    targets[b * sequenceLength + p] = tokenizer.Encode(char.ToUpperInvariant(e.End).ToString())[0];
                }
        }
        return new TokenBatch(inputs, targets, lines.Count, sequenceLength);
    }
}
