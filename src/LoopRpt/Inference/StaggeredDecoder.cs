using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>
/// The decode phase of <see cref="LoopedGenerator"/>: rows advance through their loops independently
/// (docs/adaptive-exit.md, "Staggered decoding"). Every loop of a looped model runs the same L layers, so one batched
/// pass through them ("a tick") can move row a from loop 1 to loop 2 while row b runs loop 0 of its next token. A row
/// whose token exits samples its next token and starts it at loop 0 on the next tick, instead of idling while other
/// rows finish their deeper loops. Each tick is dense over the unfinished rows, so the number of ticks, not the
/// per-operation overhead of shrinking matrices, sets the cost: about (tokens per row) × (mean loops per token).
/// </summary>
/// <remarks>
/// A row attends only to its own positions and its own loop's slot, exactly as when it is decoded alone, so the result
/// is the same as one-row generation (and as adaptive teacher-forced scoring): staggering changes the order of work,
/// not the arithmetic. The fill rule of <see cref="LoopKvCache"/> is applied when a token exits: its slots of the loops
/// it skipped receive its exit loop's keys/values before the row's next token can read them. Host synchronisation: one
/// read per tick (which rows exited, with their sampled tokens); none inside the loop over layers.
/// </remarks>
internal sealed class StaggeredDecoder
{
    private readonly OuroForCausalLM _lm;

    public StaggeredDecoder(OuroForCausalLM lm) => _lm = lm;

    /// <summary>One row being decoded: its batch row, next position, and the loop its current token is at.</summary>
    private sealed class Row(int batchRow, long position)
    {
        public int BatchRow { get; } = batchRow;
        public long Position { get; set; } = position;
        public int Loop { get; set; }
    }

    /// <summary>
    /// Decodes every row in <paramref name="start"/> until <paramref name="onToken"/> says it is finished. Call under
    /// no_grad.
    /// </summary>
    /// <param name="cache">Keys/values of the prompts (prefilled); extended in place.</param>
    /// <param name="rule">Exit rule.</param>
    /// <param name="start">Per row to decode: batch row, the position of its first token (the prompt length), the token.</param>
    /// <param name="sample">Samples one token per row from logits (n, V), float32 on the CPU.</param>
    /// <param name="onToken">Receives (batch row, token, loops run by the step that produced it); returns true when the row is finished.</param>
    public void Decode(LoopKvCache cache, ExitRule rule, IReadOnlyList<(int BatchRow, long Position, long Token)> start,
        Func<Tensor, long[]> sample, Func<int, long, int, bool> onToken)
    {
        if (start.Count == 0) return;
        var backbone = _lm.Backbone;
        var device = _lm.Device;
        int layers = backbone.layers.Count, loops = cache.Loops;
        long batch = cache.Batch, capacity = cache.Capacity;
        var rows = start.Select(s => new Row(s.BatchRow, s.Position)).ToList();

        Tensor x, logSurvival, cdf;                                                     // carried across ticks
        using (var scope = NewDisposeScope())
        {
            x = backbone.embed_tokens.forward(Ids(start.Select(s => s.Token), device)).DetachFromDisposeScope();
            logSurvival = zeros(rows.Count, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
            cdf = zeros(rows.Count, dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
        }
        try
        {
            while (rows.Count > 0)
            {
                using var scope = NewDisposeScope();
                int n = rows.Count;
                var h = Tick(x, rows, cache, layers, loops, batch, capacity, device);
                // Which rows exit after this loop: the last loop always; otherwise CDF(t) >= q, accumulated exactly as
                // ExitDistribution and AdaptiveLoopRunner do (p(t) = lambda_t S_{t-1}, CDF += p, log S += log(1 - lambda)).
                bool[] exits = rows.Select(r => r.Loop >= rule.LastLoop).ToArray();
                Tensor newLog = logSurvival, newCdf = cdf;
                if (!rule.Static && rows.Any(r => r.Loop < rule.LastLoop))
                {
                    var g = backbone.early_exit_gate.forward(h).squeeze(-1).to_type(ScalarType.Float32); // (n)
                    newCdf = cdf + (F.logsigmoid(g) + logSurvival).exp();
                    newLog = logSurvival + F.logsigmoid(-g);
                    var gated = (newCdf >= rule.Threshold).cpu().data<bool>().ToArray();   // the one host read per tick
                    for (int j = 0; j < n; j++) exits[j] |= gated[j];
                }
                var leaving = Enumerable.Range(0, n).Where(j => exits[j]).ToArray();
                if (leaving.Length == 0)
                {
                    foreach (var r in rows) r.Loop++;
                    Carry(ref x, h);
                    Carry(ref logSurvival, newLog);
                    Carry(ref cdf, newCdf);
                    continue;
                }

                var exitStates = leaving.Length == n ? h : h.index_select(0, Ids(leaving.Select(j => (long)j), device));
                var tokens = sample(_lm.Logits(exitStates).to_type(ScalarType.Float32).cpu());
                FillSkippedLoops(cache, rows, leaving, rule.LastLoop, layers, device);

                var restart = new List<int>();                                          // rows starting their next token
                var restartTokens = new List<long>();
                var finished = new bool[n];
                for (int k = 0; k < leaving.Length; k++)
                {
                    var row = rows[leaving[k]];
                    finished[leaving[k]] = onToken(row.BatchRow, tokens[k], row.Loop + 1);
                    if (finished[leaving[k]]) continue;
                    row.Position++;
                    row.Loop = -1;                                                      // incremented to 0 below
                    restart.Add(leaving[k]);
                    restartTokens.Add(tokens[k]);
                }
                foreach (var r in rows) r.Loop++;
                if (restart.Count > 0)
                {
                    var at = Ids(restart.Select(j => (long)j), device);
                    var embedded = backbone.embed_tokens.forward(Ids(restartTokens, device));
                    h = restart.Count == n ? embedded : h.index_copy(0, at, embedded);
                    newLog = newLog.index_fill(0, at, 0.0);
                    newCdf = newCdf.index_fill(0, at, 0.0);
                }
                if (finished.Any(f => f))
                {
                    var keep = Enumerable.Range(0, n).Where(j => !finished[j]).ToArray();
                    var kept = Ids(keep.Select(j => (long)j), device);
                    h = h.index_select(0, kept);
                    newLog = newLog.index_select(0, kept);
                    newCdf = newCdf.index_select(0, kept);
                    rows = keep.Select(j => rows[j]).ToList();
                }
                Carry(ref x, h);
                Carry(ref logSurvival, newLog);
                Carry(ref cdf, newCdf);
            }
        }
        finally
        {
            x.Dispose();
            logSurvival.Dispose();
            cdf.Dispose();
        }
    }

    /// <summary>One pass through the L layers and the final norm, every row at its own loop and position.</summary>
    private Tensor Tick(Tensor x, List<Row> rows, LoopKvCache cache, int layers, int loops, long batch, long capacity, Device device)
    {
        var backbone = _lm.Backbone;
        int n = rows.Count;
        long maxPosition = rows.Max(r => r.Position), length = maxPosition + 1;
        bool samePosition = rows.All(r => r.Position == maxPosition);
        // Rows that are the whole batch, in order, at one loop read their slot as a view; otherwise rows are gathered.
        bool sameLoop = n == batch && rows.All(r => r.Loop == rows[0].Loop) && rows.Select((r, j) => r.BatchRow == j).All(b => b);

        // Host-built indices, one transfer per tick: positions (n) | write rows (L*n) | slot rows (L*n).
        var host = new long[n + 2 * layers * n];
        for (int j = 0; j < n; j++)
        {
            var r = rows[j];
            host[j] = r.Position;
            for (int l = 0; l < layers; l++)
            {
                host[n + l * n + j] = cache.FlatRow(l, r.Loop, r.BatchRow, r.Position);
                host[n + (layers + l) * n + j] = (l * (long)loops + r.Loop) * batch + r.BatchRow;
            }
        }
        var indices = tensor(host, [host.Length], device: device);
        var positions = indices.narrow(0, 0, n);
        var (cosTable, sinTable) = _lm.Rope.Get(0, length, device, x.dtype);
        var cos = cosTable.index_select(0, positions).unsqueeze(1);                    // (n, 1, D)
        var sin = sinTable.index_select(0, positions).unsqueeze(1);
        // Each row sees its own positions 0..p; with equal positions every key up to p is visible and no mask is needed.
        var mask = samePosition ? null : (arange(length, device: device).view(1, 1, 1, length) <= positions.view(n, 1, 1, 1));

        var keysBySlot = cache.AllKeys.view(layers * loops * batch, capacity, cache.AllKeys.shape[1], cache.AllKeys.shape[2]);
        var valuesBySlot = cache.AllValues.view(keysBySlot.shape);
        for (int l = 0; l < layers; l++)
        {
            var layer = backbone.layers[l];
            var attn = layer.self_attn;
            var normed = layer.input_layernorm.forward(x);
            var q = Rope.Apply(attn.q_proj.forward(normed).view(n, attn.NumHeads, attn.HeadDim), cos, sin);   // (n, h, D)
            var k = Rope.Apply(attn.k_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim), cos, sin); // (n, kv, D)
            var v = attn.v_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim);
            var writeRows = indices.narrow(0, n + l * n, n);
            cache.AllKeys.index_copy_(0, writeRows, k);
            cache.AllValues.index_copy_(0, writeRows, v);

            Tensor keys, values;                                                        // (n, length, kv, D)
            if (sameLoop)
            {
                long first = (l * (long)loops + rows[0].Loop) * batch;
                keys = keysBySlot.narrow(0, first, n).narrow(1, 0, length);
                values = valuesBySlot.narrow(0, first, n).narrow(1, 0, length);
            }
            else
            {
                var slotRows = indices.narrow(0, n + (layers + l) * n, n);
                keys = keysBySlot.narrow(1, 0, length).index_select(0, slotRows);
                values = valuesBySlot.narrow(1, 0, length).index_select(0, slotRows);
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
    private static void FillSkippedLoops(LoopKvCache cache, List<Row> rows, int[] leaving, int lastLoop, int layers, Device device)
    {
        var from = new List<long>();
        var to = new List<long>();
        foreach (int j in leaving)
        {
            var r = rows[j];
            for (int l = 0; l < layers; l++)
                for (int t = r.Loop + 1; t <= lastLoop; t++)
                {
                    from.Add(cache.FlatRow(l, r.Loop, r.BatchRow, r.Position));
                    to.Add(cache.FlatRow(l, t, r.BatchRow, r.Position));
                }
        }
        if (from.Count == 0) return;
        var both = tensor(from.Concat(to).ToArray(), [2 * from.Count], device: device);
        var source = both.narrow(0, 0, from.Count);
        var target = both.narrow(0, from.Count, from.Count);
        cache.AllKeys.index_copy_(0, target, cache.AllKeys.index_select(0, source));
        cache.AllValues.index_copy_(0, target, cache.AllValues.index_select(0, source));
    }

    private static Tensor Ids(IEnumerable<long> values, Device device)
    {
        var array = values.ToArray();
        return tensor(array, [array.Length], device: device);
    }

    /// <summary>Keeps <paramref name="value"/> past the tick's dispose scope and releases what <paramref name="slot"/> held.</summary>
    private static void Carry(ref Tensor slot, Tensor value)
    {
        if (ReferenceEquals(slot, value)) return;
        value.DetachFromDisposeScope();
        slot.Dispose();
        slot = value;
    }
}
