using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>
/// Batched generation for <see cref="LoopedGenerator"/> in which rows advance through their loops independently
/// (docs/adaptive-exit.md, "Staggered decoding"). Every loop of a looped model runs the same L layers, so one batched
/// pass through them ("a tick") can move row a from loop 1 to loop 2 while row b runs loop 0 of its next token. A row
/// whose token exits samples its next token and starts it at loop 0 on the next tick instead of idling while other rows
/// finish deeper loops; a row whose sequence ends takes the next waiting prompt (continuous batching). Each tick is
/// dense over the live rows, so the number of ticks, about (tokens per row) × (mean loops per token), sets the cost.
/// </summary>
/// <remarks>
/// A row attends only to its own positions and its own loop's slot, exactly as when it is decoded alone, so every
/// sequence gets the result it would get alone (and that adaptive teacher-forced scoring gives): staggering changes the
/// order of work, not the arithmetic. The fill rule of <see cref="LoopKvCache"/> is applied when a token exits: its
/// slots of the loops it skipped receive its exit loop's keys/values before the row's next token can read them.
/// Host synchronisation: one read per tick (which rows exited) and one for the tokens sampled; none inside the loop
/// over layers.
/// </remarks>
internal sealed class StaggeredDecoder
{
    private readonly OuroForCausalLM _lm;
    private readonly AdaptiveLoopRunner _runner;
    // Views made once per Run (a decoder serves one call): cache slots as (L * T' * B, C, kv, D), the attention bias
    // flattened, RoPE tables as (C, 1, D).
    private Tensor? _keysBySlot, _valuesBySlot, _biasFlat, _cosRows, _sinRows;

    public StaggeredDecoder(OuroForCausalLM lm)
    {
        _lm = lm;
        _runner = new AdaptiveLoopRunner(lm);
    }

    /// <summary>A batch row: the sequence it decodes, the position being computed, and the loop its token is at.</summary>
    private sealed class Row(int batchRow)
    {
        public int BatchRow { get; } = batchRow;
        public int Sequence { get; set; }
        public long Position { get; set; }
        public int Loop { get; set; }
    }

    /// <summary>
    /// Generates for every prompt, at most <paramref name="batchSize"/> rows at a time. Call under no_grad.
    /// </summary>
    /// <param name="prompts">Prompts (validated by the caller).</param>
    /// <param name="batchSize">Rows decoded together at most.</param>
    /// <param name="maxNewTokens">Tokens per sequence at most (sizes the cache).</param>
    /// <param name="rule">Exit rule.</param>
    /// <param name="sample">Samples one token per row from logits (n, V), on the model's device and in its type.</param>
    /// <param name="onToken">Receives (sequence, token, loops run by the step that produced it); returns true when the
    /// sequence is finished.</param>
    /// <param name="inspect">Called with the cache before it is disposed (tests).</param>
    /// <param name="cancellationToken">Checked once per tick.</param>
    /// <param name="kvCache">Key/value rule at decode time.</param>
    public void Run(IReadOnlyList<IReadOnlyList<long>> prompts, int batchSize, int maxNewTokens, ExitRule rule, KvCacheMode kvCache,
        Func<Tensor, long[]> sample, Func<int, long, int, bool> onToken, Action<LoopKvCache>? inspect = null,
        CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var config = _lm.Config;
        var device = _lm.Device;
        int batch = Math.Min(batchSize, prompts.Count);
        long capacity = prompts.Max(p => p.Count) + maxNewTokens;
        using var cache = new LoopKvCache(batch, capacity, config.TotalUtSteps, config.NumHiddenLayers, config.NumKeyValueHeads,
            config.HeadDim, rolling: kvCache == KvCacheMode.LastLoop, device, _lm.DType);
        var pending = new Queue<int>(Enumerable.Range(0, prompts.Count));
        var staged = new Queue<Staged>();
        var all = Enumerable.Range(0, batch).Select(b => new Row(b)).ToList();

        // Additive attention bias per batch row (B, C): 0 on the positions that a row computing position p may see
        // (0..p), -inf elsewhere. The attention kernel adds a float bias as is; a boolean mask is converted per call.
        var bias = full([batch, capacity], double.NegativeInfinity, dtype: _lm.DType, device: device);
        Tensor? x = null, logSurvival = null, cdf = null;                               // carried across ticks
        try
        {
            using (var scope = NewDisposeScope())
            {
                long slots = config.NumHiddenLayers * (long)cache.SlotLoops * batch;
                _keysBySlot = cache.AllKeys.view(slots, capacity, config.NumKeyValueHeads, config.HeadDim).DetachFromDisposeScope();
                _valuesBySlot = cache.AllValues.view(slots, capacity, config.NumKeyValueHeads, config.HeadDim).DetachFromDisposeScope();
                _biasFlat = bias.view(-1).DetachFromDisposeScope();
                var (cos, sin) = _lm.Rope.Get(0, capacity, device, _lm.DType);
                _cosRows = cos.unsqueeze(1).DetachFromDisposeScope();
                _sinRows = sin.unsqueeze(1).DetachFromDisposeScope();
            }
            List<Row> rows;
            using (var scope = NewDisposeScope())
            {
                var first = Start(all, prompts, pending, staged, cache, rule, sample, onToken, bias);
                rows = all.Where(first.ContainsKey).ToList();
                if (rows.Count > 0)
                {
                    x = _lm.Backbone.embed_tokens.forward(Ids(rows.Select(r => first[r]), device)).DetachFromDisposeScope();
                    logSurvival = zeros(rows.Count, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
                    cdf = zeros(rows.Count, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
                }
            }
            while (rows.Count > 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                rows = Step(rows, prompts, pending, staged, cache, rule, sample, onToken, bias, ref x!, ref logSurvival!, ref cdf!);
            }
            inspect?.Invoke(cache);
        }
        finally
        {
            x?.Dispose();
            logSurvival?.Dispose();
            cdf?.Dispose();
            foreach (var view in new[] { _keysBySlot, _valuesBySlot, _biasFlat, _cosRows, _sinRows }) view?.Dispose();
            bias.Dispose();
            foreach (var source in staged.Select(st => st.Source).Distinct()) source.Dispose();   // after a failure
        }
    }

    /// <summary>One tick for the live rows, then exits, sampling, the fill rule and row turnover. Returns the live rows.</summary>
    private List<Row> Step(List<Row> rows, IReadOnlyList<IReadOnlyList<long>> prompts, Queue<int> pending, Queue<Staged> staged, LoopKvCache cache,
        ExitRule rule, Func<Tensor, long[]> sample, Func<int, long, int, bool> onToken, Tensor bias,
        ref Tensor x, ref Tensor logSurvival, ref Tensor cdf)
    {
        using var scope = NewDisposeScope();
        var backbone = _lm.Backbone;
        var device = _lm.Device;
        int n = rows.Count;
        var h = Tick(x, bias, rows, cache);

        // Which rows exit after this loop: the last loop always; otherwise CDF(t) >= q, accumulated exactly as
        // ExitDistribution and AdaptiveLoopRunner do (p(t) = lambda_t S_{t-1}, CDF += p, log S += log(1 - lambda)).
        bool[] exits = rows.Select(r => r.Loop >= rule.LastLoop).ToArray();
        if (!rule.Static && rows.Any(r => r.Loop < rule.LastLoop))
        {
            // In place on the carried state (the same arithmetic, fewer tensors per tick).
            var g = backbone.early_exit_gate.forward(h).squeeze(-1);                    // (n)
            if (g.dtype != ScalarType.Float32) g = g.to_type(ScalarType.Float32);
            cdf.add_(F.logsigmoid(g).add_(logSurvival).exp_());
            logSurvival.add_(F.logsigmoid(g.neg_()));
            var gated = (cdf >= rule.Threshold).cpu().data<bool>().ToArray();          // the one host read per tick
            for (int j = 0; j < n; j++) exits[j] |= gated[j];
        }
        var leaving = Enumerable.Range(0, n).Where(j => exits[j]).ToArray();
        if (leaving.Length == 0)
        {
            foreach (var r in rows) r.Loop++;
            Keep(ref x, h);
            return rows;
        }

        var exitStates = leaving.Length == n ? h : h.index_select(0, Ids(leaving.Select(j => (long)j), device));
        var tokens = sample(_lm.Logits(exitStates));
        if (!cache.Rolling) FillSkippedLoops(cache, rows, leaving, rule.LastLoop);

        var next = new Dictionary<Row, long>();                                         // rows starting a token
        var ended = new List<Row>();
        var seen = new List<long>();                                                    // bias entries that become visible
        for (int k = 0; k < leaving.Length; k++)
        {
            var row = rows[leaving[k]];
            if (onToken(row.Sequence, tokens[k], row.Loop + 1))
            {
                ended.Add(row);
                continue;
            }
            row.Position++;
            row.Loop = 0;
            next[row] = tokens[k];
            seen.Add(row.BatchRow * cache.Capacity + row.Position);
        }
        foreach (var r in rows)
            if (!next.ContainsKey(r) && !ended.Contains(r)) r.Loop++;
        if (seen.Count > 0) _biasFlat!.index_fill_(0, Ids(seen, device), 0.0);
        if (ended.Count > 0)
            foreach (var (row, token) in Start(ended, prompts, pending, staged, cache, rule, sample, onToken, bias))
                next[row] = token;                                                      // a waiting prompt took the row

        var live = rows.Where(r => !ended.Contains(r) || next.ContainsKey(r)).ToList();
        if (next.Count > 0)
        {
            var at = Ids(rows.Select((r, j) => (r, j)).Where(p => next.ContainsKey(p.r)).Select(p => (long)p.j), device);
            var embedded = backbone.embed_tokens.forward(Ids(rows.Where(next.ContainsKey).Select(r => next[r]), device));
            h = next.Count == n ? embedded : h.index_copy_(0, at, embedded);
            if (!rule.Static)
            {
                logSurvival.index_fill_(0, at, 0.0);
                cdf.index_fill_(0, at, 0.0);
            }
        }
        if (live.Count < n)
        {
            var kept = Ids(rows.Select((r, j) => (r, j)).Where(p => live.Contains(p.r)).Select(p => (long)p.j), device);
            h = h.index_select(0, kept);
            Keep(ref logSurvival, logSurvival.index_select(0, kept));
            Keep(ref cdf, cdf.index_select(0, kept));
        }
        Keep(ref x, h);
        return live;
    }

    /// <summary>A prompt already prefilled into row <see cref="Index"/> of a scratch cache, waiting for a batch row.</summary>
    private sealed record Staged(Scratch Source, int Index, int Sequence, long Token, long Length);

    /// <summary>A scratch cache of prefilled prompts, disposed when the last of them has been copied into a batch row.</summary>
    private sealed class Scratch(LoopKvCache cache) : IDisposable
    {
        public LoopKvCache Cache { get; } = cache;
        public int Waiting { get; set; }
        public void Dispose() => Cache.Dispose();
    }

    /// <summary>
    /// Gives each of <paramref name="free"/> the next prefilled prompt, prefilling the next waiting prompts (up to a
    /// batch of them in one pass) when none is staged. Returns the rows that start decoding, with their first token;
    /// rows left without a prompt are not in the result.
    /// </summary>
    private Dictionary<Row, long> Start(IEnumerable<Row> free, IReadOnlyList<IReadOnlyList<long>> prompts, Queue<int> pending,
        Queue<Staged> staged, LoopKvCache cache, ExitRule rule, Func<Tensor, long[]> sample, Func<int, long, int, bool> onToken, Tensor bias)
    {
        var started = new Dictionary<Row, long>();
        foreach (var row in free)
        {
            while (staged.Count == 0 && pending.Count > 0)
                Stage(prompts, pending, staged, (int)cache.Batch, cache.Rolling, rule, sample, onToken);
            if (staged.Count == 0) break;
            var s = staged.Dequeue();
            // (2 * L * T, rows, positions, kv, D) views: the prompt's slots go to the batch row, positions [0, length).
            var (kv, d) = (cache.All.shape[1], cache.All.shape[2]);
            var from = s.Source.Cache.All.view(-1, s.Source.Cache.Batch, s.Source.Cache.Capacity, kv, d);
            var to = cache.All.view(-1, cache.Batch, cache.Capacity, kv, d);
            using (var scope = NewDisposeScope())
                to.select(1, row.BatchRow).narrow(1, 0, s.Length).copy_(from.select(1, s.Index).narrow(1, 0, s.Length));
            if (--s.Source.Waiting == 0) s.Source.Dispose();
            row.Sequence = s.Sequence;
            row.Position = s.Length;
            row.Loop = 0;
            var line = bias[row.BatchRow];
            line.fill_(double.NegativeInfinity);
            line.narrow(0, 0, s.Length + 1).fill_(0.0);
            started[row] = s.Token;
        }
        return started;
    }

    /// <summary>
    /// Prefills up to <paramref name="count"/> waiting prompts in one right-padded chunk on a scratch cache (the
    /// compute-saving pass of scoring), samples their first tokens, and stages the sequences that go on.
    /// </summary>
    private void Stage(IReadOnlyList<IReadOnlyList<long>> prompts, Queue<int> pending, Queue<Staged> staged, int count, bool rolling,
        ExitRule rule, Func<Tensor, long[]> sample, Func<int, long, int, bool> onToken)
    {
        using var scope = NewDisposeScope();
        var device = _lm.Device;
        var config = _lm.Config;
        var sequences = Enumerable.Range(0, Math.Min(count, pending.Count)).Select(_ => pending.Dequeue()).ToArray();
        int k = sequences.Length;
        int longest = sequences.Max(i => prompts[i].Count);
        var padded = new long[k * longest];
        var real = new bool[k * longest];
        for (int i = 0; i < k; i++)
        {
            var p = prompts[sequences[i]];
            for (int j = 0; j < p.Count; j++)
            {
                padded[i * longest + j] = p[j];
                real[i * longest + j] = true;
            }
        }
        var ids = tensor(padded, [k, longest], device: device);
        var valid = sequences.All(i => prompts[i].Count == longest) ? null : tensor(real, [k, longest], device: device);
        var scratch = new Scratch(new LoopKvCache(k, longest, config.TotalUtSteps, config.NumHiddenLayers,
            config.NumKeyValueHeads, config.HeadDim, rolling, device, _lm.DType));
        try
        {
            var run = _runner.Run(ids, valid, scratch.Cache, rule);
            var last = tensor(Enumerable.Range(0, k).Select(i => (long)(i * longest + prompts[sequences[i]].Count - 1)).ToArray(), [k], device: device);
            var exits = run.ExitSteps.index_select(0, last).cpu().data<long>().ToArray();
            var tokens = sample(_lm.Logits(run.States.index_select(0, last)));
            for (int i = 0; i < k; i++)
                if (!onToken(sequences[i], tokens[i], (int)exits[i] + 1))
                {
                    staged.Enqueue(new Staged(scratch, i, sequences[i], tokens[i], prompts[sequences[i]].Count));
                    scratch.Waiting++;
                }
        }
        finally
        {
            if (scratch.Waiting == 0) scratch.Dispose();
        }
    }

    /// <summary>One pass through the L layers and the final norm, every row at its own loop and position.</summary>
    private Tensor Tick(Tensor x, Tensor bias, List<Row> rows, LoopKvCache cache)
    {
        var backbone = _lm.Backbone;
        var device = _lm.Device;
        int n = rows.Count, layers = cache.Layers, loops = cache.SlotLoops;
        long batch = cache.Batch;
        long maxPosition = rows.Max(r => r.Position), length = maxPosition + 1;
        bool samePosition = rows.All(r => r.Position == maxPosition);
        // Rows that are the whole batch, in order, read their bias rows as a view; at one loop also their slot.
        bool wholeBatch = n == batch && rows.Select((r, j) => r.BatchRow == j).All(b => b);
        // One slot per layer (KvCacheMode.LastLoop) is shared by every loop.
        bool sameLoop = wholeBatch && (cache.Rolling || rows.All(r => r.Loop == rows[0].Loop));
        int SlotLoop(Row r) => cache.Rolling ? 0 : r.Loop;

        // Host-built indices, one transfer per tick: positions (n) | batch rows (n) | write rows (L*n) | slot rows (L*n).
        var host = new long[2 * n + 2 * layers * n];
        for (int j = 0; j < n; j++)
        {
            var r = rows[j];
            host[j] = r.Position;
            host[n + j] = r.BatchRow;
            for (int l = 0; l < layers; l++)
            {
                host[2 * n + l * n + j] = cache.FlatRow(l, r.Loop, r.BatchRow, r.Position);
                host[2 * n + (layers + l) * n + j] = (l * (long)loops + SlotLoop(r)) * batch + r.BatchRow;
            }
        }
        var indices = tensor(host, [host.Length], device: device);
        var positions = indices.narrow(0, 0, n);
        var cos = _cosRows!.index_select(0, positions);                                 // (n, 1, D)
        var sin = _sinRows!.index_select(0, positions);
        // With equal positions every key up to p is visible to every row and no bias is needed.
        var mask = samePosition ? null
            : (wholeBatch ? bias : bias.index_select(0, indices.narrow(0, n, n))).narrow(1, 0, length).view(n, 1, 1, length);

        var keysBySlot = _keysBySlot!.narrow(1, 0, length);                             // (L * T' * B, length, kv, D)
        var valuesBySlot = _valuesBySlot!.narrow(1, 0, length);
        for (int l = 0; l < layers; l++)
        {
            var layer = backbone.layers[l];
            var attn = layer.self_attn;
            var normed = layer.input_layernorm.forward(x);
            var q = Rope.Apply(attn.q_proj.forward(normed).view(n, attn.NumHeads, attn.HeadDim), cos, sin);   // (n, h, D)
            var k = Rope.Apply(attn.k_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim), cos, sin); // (n, kv, D)
            var v = attn.v_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim);
            var writeRows = indices.narrow(0, 2 * n + l * n, n);
            cache.AllKeys.index_copy_(0, writeRows, k);
            cache.AllValues.index_copy_(0, writeRows, v);

            Tensor keys, values;                                                        // (n, length, kv, D)
            if (sameLoop)
            {
                long first = (l * (long)loops + SlotLoop(rows[0])) * batch;
                keys = keysBySlot.narrow(0, first, n);
                values = valuesBySlot.narrow(0, first, n);
            }
            else
            {
                var slotRows = indices.narrow(0, 2 * n + (layers + l) * n, n);
                keys = keysBySlot.index_select(0, slotRows);
                values = valuesBySlot.index_select(0, slotRows);
            }
            var o = attn.Attend(q.unsqueeze(2), keys.transpose(1, 2), values.transpose(1, 2), causal: false, mask: mask); // (n, h, 1, D)
            x = x + layer.input_layernorm_2.forward(attn.o_proj.forward(o.view(n, attn.NumHeads * attn.HeadDim)));
            x = layer.Mlp(x);
        }
        return backbone.norm.forward(x);                                                // final norm after every loop
    }

    /// <summary>
    /// Fill rule for the tokens leaving now: slots of the loops after their exit loop (up to the last loop any token can
    /// run) receive the exit loop's keys/values, so the row's later tokens that run deeper see them there.
    /// </summary>
    private void FillSkippedLoops(LoopKvCache cache, List<Row> rows, int[] leaving, int lastLoop)
    {
        var from = new List<long>();
        var to = new List<long>();
        foreach (int j in leaving)
        {
            var r = rows[j];
            for (int l = 0; l < cache.Layers; l++)
                for (int t = r.Loop + 1; t <= lastLoop; t++)
                {
                    from.Add(cache.FlatRow(l, r.Loop, r.BatchRow, r.Position));
                    to.Add(cache.FlatRow(l, t, r.BatchRow, r.Position));
                }
        }
        int count = from.Count;
        if (count == 0) return;
        // Keys and values share one tensor: one gather and one scatter move both.
        // Layout: source keys | source values | target keys | target values.
        var host = new long[4 * count];
        for (int i = 0; i < count; i++)
        {
            host[i] = from[i];
            host[count + i] = from[i] + cache.ValueOffset;
            host[2 * count + i] = to[i];
            host[3 * count + i] = to[i] + cache.ValueOffset;
        }
        var indices = tensor(host, [host.Length], device: _lm.Device);
        cache.All.index_copy_(0, indices.narrow(0, 2 * count, 2 * count), cache.All.index_select(0, indices.narrow(0, 0, 2 * count)));
    }

    private static Tensor Ids(IEnumerable<long> values, Device device)
    {
        var array = values.ToArray();
        return tensor(array, [array.Length], device: device);
    }

    /// <summary>Keeps <paramref name="value"/> past the tick's dispose scope and releases what <paramref name="slot"/> held.</summary>
    private static void Keep(ref Tensor slot, Tensor value)
    {
        if (ReferenceEquals(slot, value)) return;
        value.DetachFromDisposeScope();
        slot.Dispose();
        slot = value;
    }
}
