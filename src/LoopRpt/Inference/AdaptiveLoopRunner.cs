using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>States and exit steps of one chunk run by <see cref="AdaptiveLoopRunner"/>.</summary>
/// <param name="States">Final-normed state at each token's exit loop, (B * s, H); zero for tokens not computed.</param>
/// <param name="ExitSteps">Exit loop per token (0-based, int64), (B * s); -1 for tokens not computed.</param>
/// <param name="LoopsRun">Loops that ran for at least one token of the chunk.</param>
internal sealed record ChunkResult(Tensor States, Tensor ExitSteps, int LoopsRun);

/// <summary>
/// The compute-saving forward pass shared by scoring and generation (docs/adaptive-exit.md). After every loop, tokens
/// whose exit CDF has reached q leave the active set: later loops run norms, projections and the MLP only on the
/// still-active rows (gathered into a compact (n, H) tensor), and attention only for their queries, packed per row;
/// keys/values still cover every position, exited tokens contributing those of their exit loop (<see cref="LoopKvCache"/>'s
/// fill rule). When no token is left the remaining loops are skipped. Host synchronisation happens once per loop, when
/// the active set shrinks (it is what makes the skipped work skippable), never inside the loop over layers.
/// </summary>
internal sealed class AdaptiveLoopRunner
{
    private readonly OuroForCausalLM _lm;

    public AdaptiveLoopRunner(OuroForCausalLM lm) => _lm = lm;

    /// <summary>
    /// Test hook: called after every layer pass with (loop, layer). Each pass runs in its own dispose scope that keeps only
    /// its output, so the tensors alive here do not grow with the number of passes (issue 20: a 1.4B model's 96 passes
    /// kept every intermediate until the call ended).
    /// </summary>
    internal Action<int, int>? AfterLayer { get; set; }

    /// <summary>
    /// Runs the loops on a chunk of new tokens (B, s) at positions [cache.Length, cache.Length + s), writing their
    /// keys/values into <paramref name="cache"/>. Call under no_grad, inside the caller's dispose scope.
    /// </summary>
    /// <param name="ids">Token ids (B, s), int64.</param>
    /// <param name="valid">Which tokens to compute, (B, s) bool; null means all. Uncomputed tokens must not be visible
    /// to computed ones (right padding; rows that finished generating).</param>
    /// <param name="cache">Keys/values of earlier positions; extended by this chunk.</param>
    /// <param name="rule">The exit rule.</param>
    public ChunkResult Run(Tensor ids, Tensor? valid, LoopKvCache cache, ExitRule rule)
    {
        var backbone = _lm.Backbone;
        long b = ids.shape[0], s = ids.shape[1], n = b * s, offset = cache.Length;
        if (offset + s > cache.Capacity)
            throw new InvalidOperationException($"The KV cache holds {cache.Capacity} positions; {offset + s} are needed.");

        var section = InferenceProfile.Time("embed");
        var h = _lm.Embed(ids).reshape(n, -1);                                      // (N, H)
        section.Dispose();
        var (cos, sin) = _lm.Rope.Get(offset, s, h.device, h.dtype);                // (s, D)
        var active = ActiveSet.Create(valid, b, s, cache.Capacity, offset,
            cos.repeat(b, 1).unsqueeze(1), sin.repeat(b, 1).unsqueeze(1));          // RoPE rows (N, 1, D)
        var states = zeros_like(h);
        var exitSteps = HeldScalars.Full([n], -1L, ScalarType.Int64, h.device);
        var mask = offset > 0 && s > 1 ? ChunkMask(offset, s, h.device) : null;

        var x = active.Index is null ? h : h.index_select(0, active.Index);         // (n, H) active rows
        Tensor? logSurvival = null, cdf = null;                                    // (n) float32, log S_{t-1} and CDF(t-1)
        int loopsRun = 0;
        for (int t = 0; t <= rule.LastLoop && active.Count > 0; t++)
        {
            cache.CarryForward(t, offset, s);
            for (int l = 0; l < backbone.layers.Count; l++)
            {
                // One scope per layer pass: its projections, attention and MLP intermediates are freed as soon as the
                // pass ends; only its output survives, and the previous state is freed once replaced.
                using (var pass = NewDisposeScope())
                    x = Replace(x, h, pass.MoveToOuter(LayerStep(backbone.layers[l], t, l, x, active, cache, b, s, offset, mask)));
                AfterLayer?.Invoke(t, l);
            }
            using (InferenceProfile.Time("final_norm"))
                x = Replace(x, h, backbone.norm.forward(x));                        // final norm after every loop
            loopsRun = t + 1;
            using var exitSection = InferenceProfile.Time("exit");                 // the gate, the CDF, exited tokens

            Tensor? exits = null;                                                   // (n) bool; null = every active token exits
            if (t < rule.LastLoop && !rule.Static)
            {
                // Exit distribution, docs/method.md §2, accumulated exactly as ExitDistribution computes it:
                // p(t) = lambda_t S_{t-1}, CDF(t) = sum_{s<=t} p(s), log S_t = log S_{t-1} + log(1 - lambda_t).
                var g = backbone.early_exit_gate.forward(x).squeeze(-1).to_type(ScalarType.Float32); // (n)
                logSurvival ??= zeros_like(g);
                var p = F.logsigmoid(g).PlusInPlace(logSurvival).exp_();
                cdf = cdf is null ? p : cdf.Plus(p);
                logSurvival = logSurvival.Plus(F.logsigmoid(-g));
                exits = cdf.AtLeast(rule.Threshold);
            }
            else if (t < rule.LastLoop) continue;                                   // nobody exits before the last loop

            var leaving = exits?.nonzero().squeeze(1);                              // the one host sync per loop
            if (leaving is not null && leaving.shape[0] == 0) continue;
            if (leaving is null || leaving.shape[0] == active.Count)
            {
                // Every active token exits here: store the states; later loops are skipped below.
                if (active.Index is null) states.copy_(x);
                else states.index_copy_(0, active.Index, x);
                exitSteps.IndexFill(active.Index ?? HeldScalars.Arange(0, n, ScalarType.Int64, h.device), t);
                break;
            }
            var all = active.Index ?? HeldScalars.Arange(0, n, ScalarType.Int64, h.device);
            var leavingRows = all.index_select(0, leaving);
            states.index_copy_(0, leavingRows, x.index_select(0, leaving));
            exitSteps.IndexFill(leavingRows, t);
            var staying = (~exits!).nonzero().squeeze(1);
            active = active.Keep(staying, all);
            x = x.index_select(0, staying);
            logSurvival = logSurvival!.index_select(0, staying);
            cdf = cdf!.index_select(0, staying);
        }
        for (int t = loopsRun; t < cache.Loops; t++) cache.CarryForward(t, offset, s);   // fill rule for skipped loops
        cache.Length = offset + s;
        return new ChunkResult(states, exitSteps, loopsRun);
    }

    /// <summary>Disposes the superseded state <paramref name="old"/> (never the embeddings <paramref name="keep"/>) and returns <paramref name="next"/>.</summary>
    private static Tensor Replace(Tensor old, Tensor keep, Tensor next)
    {
        if (!ReferenceEquals(old, keep) && !ReferenceEquals(old, next)) old.Dispose();
        return next;
    }

    /// <summary>One decoder layer on the active rows x (n, H); attention reads every position of slot (t, l).</summary>
    private static Tensor LayerStep(OuroDecoderLayer layer, int t, int l, Tensor x, ActiveSet active, LoopKvCache cache,
        long b, long s, long offset, Tensor? mask)
    {
        var attn = layer.self_attn;
        long n = x.shape[0];
        var section = InferenceProfile.Time("qkv");
        var normed = layer.input_layernorm.forward(x);
        var q = Rope.Apply(attn.q_proj.forward(normed).view(n, attn.NumHeads, attn.HeadDim), active.Cos, active.Sin);   // (n, h, D)
        var k = Rope.Apply(attn.k_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim), active.Cos, active.Sin); // (n, kv, D)
        var v = attn.v_proj.forward(normed).view(n, attn.NumKvHeads, attn.HeadDim);                                     // (n, kv, D)
        section = section.Next("attention");
        var (keys, values) = cache.Write(t, l, active.CacheRows, k, v, offset, s);                                     // (B, kv, offset+s, D)

        Tensor o;
        if (active.Index is null)
        {
            o = attn.Attend(q.view(b, s, attn.NumHeads, attn.HeadDim).transpose(1, 2), keys, values, causal: offset == 0, mask: mask); // (B, h, s, D)
            o = o.transpose(1, 2).reshape(b * s, attn.NumHeads * attn.HeadDim);
        }
        else
        {
            // Only active queries attend: packed per row into (B, m) slots, m = the most active tokens of any row.
            long m = active.QueriesPerRow;
            var packed = zeros([b * m, attn.NumHeads, attn.HeadDim], dtype: q.dtype, device: q.device).index_copy_(0, active.QueryRows!, q);
            o = attn.Attend(packed.view(b, m, attn.NumHeads, attn.HeadDim).transpose(1, 2), keys, values, causal: false, mask: active.Mask); // (B, h, m, D)
            o = o.transpose(1, 2).reshape(b * m, attn.NumHeads * attn.HeadDim).index_select(0, active.QueryRows!);             // (n, h*D)
        }
        section = section.Next("o_proj");
        x = x.Plus(layer.input_layernorm_2.forward(attn.o_proj.forward(o)));
        section = section.Next("mlp");
        x = layer.Mlp(x);
        section.Dispose();
        return x;
    }

    /// <summary>Causal mask of a chunk that continues a cached prefix: query i (position offset + i) sees keys 0..offset + i.</summary>
    private static Tensor ChunkMask(long offset, long s, Device device)
    {
        var keys = HeldScalars.Arange(0, offset + s, ScalarType.Int64, device).unsqueeze(0);        // (1, offset+s)
        var queries = HeldScalars.Arange(offset, offset + s, ScalarType.Int64, device).unsqueeze(1); // (s, 1)
        return keys <= queries;                                                     // (s, offset+s)
    }

    /// <summary>
    /// The tokens still running: flat chunk indices (null = all), cache rows, RoPE rows, and the packing of their queries
    /// into (B, m) slots with a mask (B, 1, m, offset + s) that lets each query see its own row's positions up to its own.
    /// </summary>
    private sealed record ActiveSet(Tensor? Index, Tensor? CacheRows, Tensor? QueryRows, Tensor? Mask, long QueriesPerRow,
        Tensor Cos, Tensor Sin, long Count, long Batch, long Chunk, long Capacity, long Offset)
    {
        public static ActiveSet Create(Tensor? valid, long b, long s, long capacity, long offset, Tensor cos, Tensor sin)
        {
            if (valid is null) return new(null, null, null, null, s, cos, sin, b * s, b, s, capacity, offset);
            var index = valid.reshape(b * s).nonzero().squeeze(1);
            return From(index, cos.index_select(0, index), sin.index_select(0, index), b, s, capacity, offset);
        }

        /// <summary>Keeps the rows <paramref name="staying"/> of the current active list <paramref name="all"/>.</summary>
        public ActiveSet Keep(Tensor staying, Tensor all)
            => From(all.index_select(0, staying), Cos.index_select(0, staying), Sin.index_select(0, staying), Batch, Chunk, Capacity, Offset);

        private static ActiveSet From(Tensor index, Tensor cos, Tensor sin, long b, long s, long capacity, long offset)
        {
            long n = index.shape[0];
            if (n == 0) return new(index, null, null, null, 0, cos, sin, 0, b, s, capacity, offset);
            using var chunk = s.ToScalar();
            var row = index.div(chunk, rounding_mode: RoundingMode.floor);                   // (n) batch row
            var position = index.remainder(chunk).Plus(offset);                              // (n) absolute position
            var cacheRows = row.Times(capacity).PlusInPlace(position);                        // b * C + position
            // Decoding one token per row: one query slot per row that sees every cached position; no packing needed.
            if (s == 1) return new(index, cacheRows, row, null, 1, cos, sin, n, b, s, capacity, offset);
            // index is sorted, so a token's rank within its row is its index minus the row's first index in the list.
            var counts = bincount(row, minlength: b);                                         // (B)
            long m = counts.max().item<long>();                                               // per loop, not per layer
            var rank = HeldScalars.Arange(0, n, ScalarType.Int64, index.device) - (counts.cumsum(0) - counts).index_select(0, row);
            var queryRows = row.Times(m).PlusInPlace(rank);                                   // (n) slot in (B * m)
            var queryPositions = zeros(b * m, dtype: ScalarType.Int64, device: index.device).index_copy_(0, queryRows, position);
            var keyPositions = HeldScalars.Arange(0, offset + s, ScalarType.Int64, index.device).view(1, 1, 1, -1);
            var mask = keyPositions <= queryPositions.view(b, 1, m, 1);                       // (B, 1, m, offset+s); empty slots see position 0
            return new(index, cacheRows, queryRows, mask, m, cos, sin, n, b, s, capacity, offset);
        }
    }
}
