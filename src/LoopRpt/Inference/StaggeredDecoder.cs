using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// Batched generation for <see cref="LoopedGenerator"/> in which rows advance through their loops independently
/// (docs/adaptive-exit.md, "Staggered decoding"). Every loop of a looped model runs the same L layers, so one batched
/// pass through them ("a tick") can move row a from loop 1 to loop 2 while row b runs loop 0 of its next token. A row
/// whose token exits samples its next token and starts it at loop 0 on the next tick instead of idling while other rows
/// finish deeper loops; a row whose sequence ends takes the next waiting prompt, and a free row takes a prompt that arrives
/// while the batch decodes at the next tick (continuous batching: the prompts come from a feed). Each row has its own exit
/// rule and its own sampling (<see cref="DecodeSequence"/>). Each tick is dense over the live rows, so the number of
/// ticks, about (tokens per row) × (mean loops per token), sets the cost.
/// </summary>
/// <remarks>
/// A row attends only to its own positions and its own loop's slot, exactly as when it is decoded alone, so every
/// sequence gets the result it would get alone (and that adaptive teacher-forced scoring gives): staggering changes the
/// order of work, not the arithmetic. The fill rule of <see cref="LoopKvCache"/> is applied when a token exits: its
/// slots of the loops it skipped receive its exit loop's keys/values before the row's next token can read them.
/// Host synchronisation: one read per tick (the rows' gate logits; the exit CDF is then accumulated on the host by
/// <see cref="HostExitCdf"/>) and one for the tokens sampled; none inside the loop over layers. Per tick the host sends
/// one index tensor for the layers and, when rows exit, one for their head, fill copies and attention bias.
/// </remarks>
internal sealed class StaggeredDecoder
{
    private readonly OuroForCausalLM _lm;
    private readonly AdaptiveLoopRunner _runner;
    // Views made once per Run (a decoder serves one call): cache slots as (2 * L * T' * B, C, kv, D), keys' slots then
    // values' (_valueSlots apart), the attention bias flattened and as (B, 1, 1, C), RoPE tables as (C, 1, D).
    private Tensor? _bySlot, _biasFlat, _biasRows, _cosRows, _sinRows;
    private long _valueSlots;
    // False until the run's first prefill: only that one may write into the batch's cache (see Start).
    private bool _batchCacheWritten;

    public StaggeredDecoder(OuroForCausalLM lm)
    {
        _lm = lm;
        _runner = new AdaptiveLoopRunner(lm);
    }

    /// <summary>A batch row: the sequence it decodes, the position being computed, and the loop its token is at.</summary>
    private sealed class Row(int batchRow)
    {
        public int BatchRow { get; } = batchRow;
        public DecodeSequence Sequence { get; set; } = null!;
        public long Position { get; set; }
        public int Loop { get; set; }
        public HostExitCdf Exit;                                                        // a field: Advance updates it in place
    }

    /// <summary>Puts <paramref name="row"/> at loop 0 of a new token.</summary>
    private static void Restart(Row row)
    {
        row.Loop = 0;
        row.Exit = default;
    }

    /// <summary>
    /// Generates for every sequence <paramref name="next"/> hands out, at most <paramref name="batchSize"/> rows at a
    /// time, until it has none waiting and every row has ended. The feed is asked for more whenever a row is free (at
    /// the start, when a sequence ends, and before every tick), so a sequence that becomes available while the batch
    /// decodes joins it at the next tick. Call under no_grad; the caller disposes the sequences.
    /// </summary>
    /// <param name="next">The next waiting sequence, or null when none is waiting now (never blocks). Every sequence must
    /// fit <paramref name="capacity"/> (prompt + MaxNewTokens).</param>
    /// <param name="batchSize">Rows decoded together at most.</param>
    /// <param name="capacity">Positions per row (sizes the cache).</param>
    /// <param name="kvCache">Key/value rule at decode time.</param>
    /// <param name="inspect">Called with the cache before it is disposed (tests).</param>
    /// <param name="cancellationToken">Checked once per tick.</param>
    public void Run(Func<DecodeSequence?> next, int batchSize, long capacity, KvCacheMode kvCache, Action<LoopKvCache>? inspect = null,
        CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var config = _lm.Config;
        var device = _lm.Device;
        int batch = batchSize;
        using var cache = new LoopKvCache(batch, capacity, config.TotalUtSteps, config.NumHiddenLayers, config.NumKeyValueHeads,
            config.HeadDim, rolling: kvCache == KvCacheMode.LastLoop, device, _lm.ComputeType);
        _batchCacheWritten = false;
        var feed = new Feed(next);
        var staged = new Queue<Staged>();
        var all = Enumerable.Range(0, batch).Select(b => new Row(b)).ToList();

        // Additive attention bias per batch row (B, C): 0 on the positions that a row computing position p may see
        // (0..p), -inf elsewhere. The attention kernel adds a float bias as is; a boolean mask is converted per call.
        var bias = full([batch, capacity], HeldScalars.NegativeInfinity, dtype: _lm.ComputeType, device: device);
        Tensor? x = null;                                                               // (n, H) carried across ticks
        try
        {
            using (var scope = NewDisposeScope())
            {
                long slots = config.NumHiddenLayers * (long)cache.SlotLoops * batch;
                _bySlot = cache.All.view(2 * slots, capacity, config.NumKeyValueHeads, config.HeadDim).DetachFromDisposeScope();
                _valueSlots = slots;                                                    // keys' slots, then values'
                _biasFlat = bias.view(-1).DetachFromDisposeScope();
                _biasRows = bias.view(batch, 1, 1, capacity).DetachFromDisposeScope();
                var (cos, sin) = _lm.Rope.Get(0, capacity, device, _lm.ComputeType);
                _cosRows = cos.unsqueeze(1).DetachFromDisposeScope();
                _sinRows = sin.unsqueeze(1).DetachFromDisposeScope();
            }
            var rows = new List<Row>();
            do
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (rows.Count < batch && (staged.Count > 0 || feed.Waiting)) rows = Join(rows, all, feed, staged, cache, bias, ref x);
                if (rows.Count > 0) rows = Step(rows, feed, staged, cache, bias, ref x!);
            }
            while (rows.Count > 0 || staged.Count > 0 || feed.Waiting);
            inspect?.Invoke(cache);
        }
        finally
        {
            x?.Dispose();
            foreach (var view in new[] { _bySlot, _biasFlat, _biasRows, _cosRows, _sinRows }) view?.Dispose();
            bias.Dispose();
            foreach (var source in staged.Select(st => st.Source).Distinct()) source.Dispose();   // after a failure
        }
    }

    /// <summary>The waiting sequences: those taken from the feed and not yet prefilled, then the feed itself.</summary>
    private sealed class Feed(Func<DecodeSequence?> next)
    {
        private readonly List<DecodeSequence> _taken = [];

        /// <summary>True when a sequence is waiting (asks the feed when none was taken yet).</summary>
        public bool Waiting
        {
            get
            {
                if (_taken.Count == 0 && next() is { } s) _taken.Add(s);
                return _taken.Count > 0;
            }
        }

        /// <summary>Up to <paramref name="count"/> waiting sequences that share the first one's exit rule (one prefill pass runs one rule).</summary>
        public List<DecodeSequence> Take(int count)
        {
            while (_taken.Count < count && next() is { } s) _taken.Add(s);
            var rule = _taken[0].Rule;
            var chosen = _taken.Where(s => s.Rule == rule).Take(count).ToList();
            _taken.RemoveAll(chosen.Contains);
            return chosen;
        }
    }

    /// <summary>Free rows take waiting sequences; their first tokens' embeddings join the carried states.</summary>
    private List<Row> Join(List<Row> rows, List<Row> all, Feed feed, Queue<Staged> staged, LoopKvCache cache, Tensor bias, ref Tensor? x)
    {
        using var scope = NewDisposeScope();
        var first = Start(all.Where(r => !rows.Contains(r)), feed, staged, cache, bias);
        if (first.Count == 0) return rows;
        var joined = all.Where(first.ContainsKey).ToList();
        var embedded = _lm.Embed(Ids(joined.Select(r => first[r]), _lm.Device));
        var h = x is null ? embedded : cat([x, embedded], 0);
        h.DetachFromDisposeScope();
        x?.Dispose();
        x = h;
        return [.. rows, .. joined];
    }

    /// <summary>One tick for the live rows, then exits, sampling, the fill rule and row turnover. Returns the live rows.</summary>
    private List<Row> Step(List<Row> rows, Feed feed, Queue<Staged> staged, LoopKvCache cache, Tensor bias, ref Tensor x)
    {
        using var scope = NewDisposeScope();
        var backbone = _lm.Backbone;
        var device = _lm.Device;
        int n = rows.Count;
        var h = Tick(x, bias, rows, cache);
        var section = InferenceProfile.Time("exit");                                    // the gate, the CDF, exits and turnover
        InferenceMetrics.Ticks.Add(1);
        InferenceMetrics.RowLoops.Add(n);

        // Which rows exit after this loop: their rule's last loop always; otherwise CDF(t) >= their q. The gate logits
        // of the n rows are the one host read of the tick; the CDF is accumulated per row on the host (HostExitCdf),
        // with the arithmetic of scoring.
        var leaving = new List<int>(n);
        float[]? logits = null;
        if (rows.Any(r => !r.Sequence.Rule.Static && r.Loop < r.Sequence.Rule.LastLoop))
        {
            var g = backbone.early_exit_gate.forward(h);                                // (n, 1)
            if (g.dtype != ScalarType.Float32) g = g.to_type(ScalarType.Float32);
            logits = (g.device_type == DeviceType.CPU ? g : g.cpu()).data<float>().ToArray();
        }
        for (int j = 0; j < n; j++)
        {
            var r = rows[j];
            var rule = r.Sequence.Rule;
            if (r.Loop >= rule.LastLoop || (logits is not null && !rule.Static && r.Exit.Advance(logits[j], (float)rule.Threshold))) leaving.Add(j);
        }
        if (leaving.Count == 0)
        {
            foreach (var r in rows) r.Loop++;
            Keep(ref x, h);
            section.Dispose();
            return rows;
        }

        // One transfer for the exiting rows: their indices | fill copies of their skipped slots (exact rule: sources,
        // then targets) | the bias entries of their next positions. Opening a row's next position before its token is
        // known is safe: a row that ends is dropped or restarted by Start, which rewrites its bias row.
        int k = leaving.Count;
        var fill = cache.Rolling ? [] : FillRows(cache, rows, leaving);
        var host = new long[2 * k + fill.Length];
        for (int i = 0; i < k; i++)
        {
            var r = rows[leaving[i]];
            host[i] = leaving[i];
            host[k + fill.Length + i] = r.BatchRow * cache.Capacity + r.Position + 1;
        }
        fill.CopyTo(host, k);
        var indices = tensor(host, [host.Length], device: device);
        var exiting = k == n ? null : indices.narrow(0, 0, k);
        section = section.Next("lm_head");
        var exitRows = leaving.Select(j => rows[j]).ToList();
        var sequences = exitRows.Select(r => r.Sequence).ToList();
        var headLogits = _lm.Logits(exiting is null ? h : h.index_select(0, exiting));
        var picked = TokenSampler.Pick(headLogits, sequences);                          // (k) ids on the device
        // The one read of the ids (and log-probabilities when asked); refuses non-finite logits before the ids are embedded.
        var tokens = TokenSampler.Read(headLogits, picked, sequences, exitRows.Select(r => r.Loop + 1).ToList(), _lm);
        section = section.Next("exit");
        InferenceMetrics.Tokens.Add(k);
        if (fill.Length > 0)
        {
            // Keys and values share one tensor: one gather and one scatter move both.
            int half = fill.Length / 2;
            cache.All.index_copy_(0, indices.narrow(0, k + half, half), cache.All.index_select(0, indices.narrow(0, k, half)));
        }
        _biasFlat!.index_fill_(0, indices.narrow(0, k + fill.Length, k), HeldScalars.Zero);
        // Every exiting row starts its sampled token at loop 0 on the next tick (rows that end are handled below).
        var embedded = _lm.Embed(picked);
        h = exiting is null ? embedded : h.index_copy_(0, exiting, embedded);

        var ended = new List<Row>();
        var exited = new bool[n];
        for (int i = 0; i < k; i++)
        {
            var row = rows[leaving[i]];
            exited[leaving[i]] = true;
            if (row.Sequence.Take(tokens[i]))
            {
                ended.Add(row);
                continue;
            }
            row.Position++;
            Restart(row);
        }
        for (int j = 0; j < n; j++)
            if (!exited[j]) rows[j].Loop++;
        section.Dispose();                               // turnover below: other (a new prompt's prefill has its own sections)
        if (ended.Count == 0)
        {
            Keep(ref x, h);
            return rows;
        }

        // Rows whose sequence ended take waiting prompts (their first token replaces the one embedded above); rows
        // left without one drop out, the others keep their order.
        var taken = Start(ended, feed, staged, cache, bias);
        ended.RemoveAll(taken.ContainsKey);
        var live = ended.Count == 0 ? rows : rows.Where(r => !ended.Contains(r)).ToList();
        var turnover = new List<long>(2 * taken.Count + live.Count);
        var restarted = rows.Select((r, j) => (r, j)).Where(p => taken.ContainsKey(p.r)).ToList();
        turnover.AddRange(restarted.Select(p => (long)p.j));
        turnover.AddRange(restarted.Select(p => taken[p.r]));
        if (live.Count < n) turnover.AddRange(rows.Select((r, j) => (r, j)).Where(p => !ended.Contains(p.r)).Select(p => (long)p.j));
        var ids = tensor(turnover.ToArray(), [turnover.Count], device: device);
        int m = restarted.Count;
        if (m > 0) h = h.index_copy_(0, ids.narrow(0, 0, m), _lm.Embed(ids.narrow(0, m, m)));
        if (live.Count < n) h = h.index_select(0, ids.narrow(0, 2 * m, live.Count));
        Keep(ref x, h);
        return live;
    }

    /// <summary>A prompt already prefilled into row <see cref="Index"/> of a scratch cache, waiting for a batch row.</summary>
    private sealed record Staged(Scratch Source, int Index, DecodeSequence Sequence, long Token, long Length);

    /// <summary>A scratch cache of prefilled prompts, disposed when the last of them has been copied into a batch row;
    /// or the batch's own cache (<paramref name="owned"/> false) when the first prompts were prefilled straight into it.</summary>
    private sealed class Scratch(LoopKvCache cache, bool owned = true) : IDisposable
    {
        public LoopKvCache Cache { get; } = cache;
        public int Waiting { get; set; }
        public void Dispose() { if (owned) Cache.Dispose(); }
    }

    /// <summary>
    /// Gives each of <paramref name="free"/> the next prefilled prompt, prefilling the next waiting prompts (up to a
    /// batch of them in one pass) when none is staged. Returns the rows that start decoding, with their first token;
    /// rows left without a prompt are not in the result.
    /// </summary>
    private Dictionary<Row, long> Start(IEnumerable<Row> free, Feed feed, Queue<Staged> staged, LoopKvCache cache, Tensor bias)
    {
        var started = new Dictionary<Row, long>();
        foreach (var row in free)
        {
            // The first prompts of a run (one per batch row, in row order) are prefilled straight into the batch's cache,
            // which nothing has written yet: no second cache of the same size (docs/benchmarks.md "Prefill memory").
            // Every later prefill (rows that join a running batch) goes to a scratch cache of its own.
            while (staged.Count == 0 && feed.Waiting)
            {
                Stage(feed.Take((int)cache.Batch), staged, cache.Rolling, _batchCacheWritten ? null : cache);
                _batchCacheWritten = true;
            }
            if (staged.Count == 0) break;
            var s = staged.Dequeue();
            if (!ReferenceEquals(s.Source.Cache, cache) || s.Index != row.BatchRow)
                MoveIn(cache, s, row.BatchRow);
            if (--s.Source.Waiting == 0) s.Source.Dispose();
            row.Sequence = s.Sequence;
            row.Position = s.Length;
            Restart(row);
            var line = bias[row.BatchRow];
            line.fill_(HeldScalars.NegativeInfinity);
            line.narrow(0, 0, s.Length + 1).fill_(HeldScalars.Zero);
            started[row] = s.Token;
        }
        return started;
    }

    /// <summary>
    /// Copies a staged prompt's keys/values, positions [0, length) of every slot, into a batch row, and zeroes the rest of
    /// the row as a fresh cache holds it. The source may be the batch's own cache (a first prompt moving to a lower row
    /// when an earlier one finished at its first token): rows move only downwards there, after their own were read.
    /// </summary>
    private static void MoveIn(LoopKvCache cache, Staged s, int batchRow)
    {
        using var scope = NewDisposeScope();
        // (2 * L * T, rows, positions, kv, D) views: the prompt's slots go to the batch row, positions [0, length).
        var (kv, d) = (cache.All.shape[1], cache.All.shape[2]);
        var from = s.Source.Cache.All.view(-1, s.Source.Cache.Batch, s.Source.Cache.Capacity, kv, d);
        var to = cache.All.view(-1, cache.Batch, cache.Capacity, kv, d).select(1, batchRow);
        to.narrow(1, 0, s.Length).copy_(from.select(1, s.Index).narrow(1, 0, s.Length));
        if (ReferenceEquals(s.Source.Cache, cache)) to.narrow(1, s.Length, cache.Capacity - s.Length).zero_();
    }

    /// <summary>
    /// Prefills <paramref name="sequences"/> (one exit rule) in one right-padded chunk (the compute-saving pass of
    /// scoring) on a scratch cache, or straight into <paramref name="into"/> when it has one row per sequence (sequence
    /// i in row i), samples their first tokens, and stages the sequences that go on.
    /// </summary>
    private void Stage(List<DecodeSequence> sequences, Queue<Staged> staged, bool rolling, LoopKvCache? into = null)
    {
        using var scope = NewDisposeScope();
        var device = _lm.Device;
        var config = _lm.Config;
        var rule = sequences[0].Rule;
        var prompts = sequences.Select(s => s.Row.Prompt).ToArray();
        int k = sequences.Count;
        int longest = prompts.Max(p => p.Count);
        var padded = new long[k * longest];
        var real = new bool[k * longest];
        for (int i = 0; i < k; i++)
        {
            var p = prompts[i];
            for (int j = 0; j < p.Count; j++)
            {
                padded[i * longest + j] = p[j];
                real[i * longest + j] = true;
            }
        }
        var ids = tensor(padded, [k, longest], device: device);
        var valid = prompts.All(p => p.Count == longest) ? null : tensor(real, [k, longest], device: device);
        var scratch = into is not null && into.Batch == k ? new Scratch(into, owned: false)
            : new Scratch(new LoopKvCache(k, longest, config.TotalUtSteps, config.NumHiddenLayers,
                config.NumKeyValueHeads, config.HeadDim, rolling, device, _lm.ComputeType));
        try
        {
            var run = _runner.Run(ids, valid, scratch.Cache, rule);
            var last = tensor(Enumerable.Range(0, k).Select(i => (long)(i * longest + prompts[i].Count - 1)).ToArray(), [k], device: device);
            var exits = run.ExitSteps.index_select(0, last).cpu().data<long>().ToArray();
            var head = InferenceProfile.Time("lm_head");
            var logits = _lm.Logits(run.States.index_select(0, last));
            var tokens = TokenSampler.Read(logits, TokenSampler.Pick(logits, sequences), sequences, exits.Select(e => (int)e + 1).ToList(), _lm);
            head.Dispose();
            for (int i = 0; i < k; i++)
                if (!sequences[i].Take(tokens[i]))
                {
                    staged.Enqueue(new Staged(scratch, i, sequences[i], tokens[i].Id, prompts[i].Count));
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
        // Rows that are the batch's first n rows, in order, read their bias rows as a view; at one loop also their slot.
        bool prefix = rows.Select((r, j) => r.BatchRow == j).All(b => b);
        // One slot per layer (KvCacheMode.LastLoop) is shared by every loop.
        bool sameLoop = prefix && (cache.Rolling || rows.All(r => r.Loop == rows[0].Loop));
        int SlotLoop(Row r) => cache.Rolling ? 0 : r.Loop;

        // Host-built indices, one transfer per tick: positions (n) | batch rows (n) | write rows (L*n) | slot rows
        // (per layer: the n rows' key slots, then their value slots).
        var host = new long[2 * n + 3 * layers * n];
        for (int j = 0; j < n; j++)
        {
            var r = rows[j];
            host[j] = r.Position;
            host[n + j] = r.BatchRow;
            for (int l = 0; l < layers; l++)
            {
                host[2 * n + l * n + j] = cache.FlatRow(l, r.Loop, r.BatchRow, r.Position);
                long slot = (l * (long)loops + SlotLoop(r)) * batch + r.BatchRow;
                host[2 * n + layers * n + 2 * l * n + j] = slot;
                host[2 * n + layers * n + 2 * l * n + n + j] = slot + _valueSlots;
            }
        }
        var indices = tensor(host, [host.Length], device: device);
        var positions = indices.narrow(0, 0, n);
        var cos = _cosRows!.index_select(0, positions);                                 // (n, 1, D)
        var sin = _sinRows!.index_select(0, positions);
        // With equal positions every key up to p is visible to every row and no bias is needed.
        var mask = samePosition ? null
            : prefix ? _biasRows!.narrow(0, 0, n).narrow(3, 0, length)
            : bias.index_select(0, indices.narrow(0, n, n)).narrow(1, 0, length).view(n, 1, 1, length);

        var bySlot = _bySlot!.narrow(1, 0, length);                                     // (2 * L * T' * B, length, kv, D)
        for (int l = 0; l < layers; l++)
        {
            var layer = backbone.layers[l];
            var attn = layer.self_attn;
            var section = InferenceProfile.Time("qkv");
            var normed = layer.input_layernorm.forward(x);
            var q = Rope.Apply(attn.q_proj.forward(normed).view(n, attn.NumHeads, attn.HeadDim), cos, sin);   // (n, h, D)
            var k = Rope.Apply(attn.k_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim), cos, sin); // (n, kv, D)
            var v = attn.v_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim);
            section = section.Next("attention");
            var writeRows = indices.narrow(0, 2 * n + l * n, n);
            cache.AllKeys.index_copy_(0, writeRows, k);
            cache.AllValues.index_copy_(0, writeRows, v);

            Tensor keys, values;                                                        // (n, length, kv, D)
            if (sameLoop)
            {
                long first = (l * (long)loops + SlotLoop(rows[0])) * batch;
                keys = bySlot.narrow(0, first, n);
                values = bySlot.narrow(0, _valueSlots + first, n);
            }
            else
            {
                // One gather moves both (keys and values share the cache tensor).
                var gathered = bySlot.index_select(0, indices.narrow(0, 2 * n + layers * n + 2 * l * n, 2 * n));
                keys = gathered.narrow(0, 0, n);
                values = gathered.narrow(0, n, n);
            }
            var o = attn.Attend(q.unsqueeze(2), keys.transpose(1, 2), values.transpose(1, 2), causal: false, mask: mask); // (n, h, 1, D)
            section = section.Next("o_proj");
            x = x.Plus(layer.input_layernorm_2.forward(attn.o_proj.forward(o.view(n, attn.NumHeads * attn.HeadDim))));
            section = section.Next("mlp");
            x = layer.Mlp(x);
            section.Dispose();
        }
        using (InferenceProfile.Time("final_norm"))
            return backbone.norm.forward(x);                                            // final norm after every loop
    }

    /// <summary>
    /// Fill rule for the tokens leaving now: slots of the loops after their exit loop (up to the last loop any token can
    /// run) receive the exit loop's keys/values, so the row's later tokens that run deeper see them there. Returns the
    /// flat cache rows to copy, sources then targets (keys and values of each), for one gather and one scatter.
    /// </summary>
    private static long[] FillRows(LoopKvCache cache, List<Row> rows, List<int> leaving)
    {
        int count = 0;
        foreach (int j in leaving) count += cache.Layers * Math.Max(0, rows[j].Sequence.Rule.LastLoop - rows[j].Loop);
        var host = new long[4 * count];
        int i = 0;
        foreach (int j in leaving)
        {
            var r = rows[j];
            for (int l = 0; l < cache.Layers; l++)
                for (int t = r.Loop + 1; t <= r.Sequence.Rule.LastLoop; t++, i++)
                {
                    long from = cache.FlatRow(l, r.Loop, r.BatchRow, r.Position), to = cache.FlatRow(l, t, r.BatchRow, r.Position);
                    host[i] = from;
                    host[count + i] = from + cache.ValueOffset;
                    host[2 * count + i] = to;
                    host[3 * count + i] = to + cache.ValueOffset;
                }
        }
        return host;
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

/// <summary>
/// One sequence being decoded: its <see cref="GenerationRow"/>, its resolved exit rule, its own sampling generator
/// (seeded from the row, so its draws do not depend on the rows beside it) and the count of tokens it has produced.
/// </summary>
internal sealed class DecodeSequence(GenerationRow row, ExitRule rule) : IDisposable
{
    public GenerationRow Row { get; } = row;
    public ExitRule Rule { get; } = rule;

    /// <summary>The row's own generator; null for a greedy row.</summary>
    public Generator? Generator { get; } = row.Temperature == 0 ? null : new Generator(row.Seed);

    public int Produced { get; private set; }

    private bool _disposed;

    /// <summary>
    /// Hands <paramref name="token"/> to the row; true when the sequence is finished (the row said so, or MaxNewTokens),
    /// and then releases its generator.
    /// </summary>
    public bool Take(GeneratedToken token)
    {
        Produced++;
        bool finished = Row.OnToken(token) || Produced >= Row.MaxNewTokens;
        if (finished) Dispose();
        return finished;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Generator?.Dispose();
    }
}
