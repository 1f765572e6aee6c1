using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>Greedy, temperature and top-p sampling from next-token logits, with a caller-owned generator.</summary>
internal static class TokenSampler
{
    /// <summary>The id <see cref="Pick(Tensor, double, double, Generator)"/> returns for a row whose logits are not all finite; <see cref="ToHost"/> refuses it.</summary>
    public const long NonFinite = -1;

    /// <summary>
    /// One token per row of <paramref name="logits"/> (B, V), any device and type: an int64 tensor (B) on the logits'
    /// device (created in the caller's dispose scope). Greedy picks on that device; sampling draws on the CPU in float32
    /// (the generator is a CPU generator). A row with NaN/Inf logits (NaN weights, overflow) gets <see cref="NonFinite"/>
    /// instead of argmax's arbitrary pick, checked when the ids reach the host (no extra synchronization).
    /// </summary>
    public static Tensor Pick(Tensor logits, double temperature, double topP, Generator? generator)
    {
        var device = logits.device;
        using var scope = NewDisposeScope();
        var finite = logits.isfinite();
        var rowOk = finite.all(-1);                                                       // (B)
        logits = logits.masked_fill(finite.logical_not(), HeldScalars.Zero);
        Tensor picked;
        if (temperature == 0) picked = logits.argmax(-1);                               // (B)
        else
        {
            ArgumentNullException.ThrowIfNull(generator);
            logits = logits.to_type(ScalarType.Float32).cpu();
            var probs = F.softmax(logits.DividedBy(temperature), -1);                              // (B, V)
            if (topP < 1)
            {
                var (sorted, order) = probs.sort(-1, descending: true);
                // Keep the smallest prefix of the sorted tokens whose mass reaches p: drop a token once the mass before it does.
                var drop = (sorted.cumsum(-1) - sorted).AtLeast(topP);
                var choice = multinomial(sorted.masked_fill(drop, HeldScalars.Zero), 1, generator: generator); // (B, 1) in sorted order
                picked = order.gather(-1, choice).squeeze(-1);
            }
            else picked = multinomial(probs, 1, generator: generator).squeeze(-1);
            if (picked.device != device) picked = picked.to(device);
        }
        if (picked.dtype != ScalarType.Int64) picked = picked.to_type(ScalarType.Int64);
        picked = picked.MaskedFill(rowOk.logical_not(), NonFinite);
        return picked.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One token per row of <paramref name="logits"/> (k, V), row i with the temperature, top-p and generator of
    /// <paramref name="rows"/>[i]. A sampled row is drawn alone, exactly as <see cref="Pick(Tensor, double, double, Generator)"/> draws a batch of one, so its
    /// tokens depend on its own generator only, never on the rows beside it; greedy rows share one argmax.
    /// </summary>
    public static Tensor Pick(Tensor logits, IReadOnlyList<DecodeSequence> rows)
    {
        if (rows.All(r => r.Row.Temperature == 0)) return Pick(logits, 0, 1, null);
        if (rows.Count == 1) return Pick(logits, rows[0].Row.Temperature, rows[0].Row.TopP, rows[0].Generator);
        using var scope = NewDisposeScope();
        var greedy = rows.Any(r => r.Row.Temperature == 0) ? Pick(logits, 0, 1, null) : null;
        var parts = rows.Select((r, i) => r.Row.Temperature == 0 ? greedy!.narrow(0, i, 1)
            : Pick(logits.narrow(0, i, 1), r.Row.Temperature, r.Row.TopP, r.Generator)).ToArray();
        return cat(parts, 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The tokens picked for <paramref name="rows"/> on the host, in one transfer: the ids and, when a row asks for them
    /// (<see cref="GenerationRow.TopLogprobs"/>), the log-probabilities of the model's distribution in
    /// <paramref name="logits"/> (k, V) — log-softmax of the raw logits, before temperature and top-p — of the picked token
    /// and of the most likely tokens (computed on the logits' device; only k × (2 + 2K) numbers travel).
    /// </summary>
    /// <exception cref="NotFiniteNumberException">A row's logits were not finite.</exception>
    public static GeneratedToken[] Read(Tensor logits, Tensor picked, IReadOnlyList<DecodeSequence> rows, IReadOnlyList<int> loops, OuroForCausalLM lm)
    {
        int k = rows.Count;
        if (rows.All(r => r.Row.TopLogprobs is null))
        {
            var ids = ToHost(picked, lm);
            return Enumerable.Range(0, k).Select(i => new GeneratedToken(ids[i], loops[i], float.NaN, [])).ToArray();
        }
        int top = rows.Max(r => r.Row.TopLogprobs ?? 0);
        double[] host;
        using (var scope = NewDisposeScope())
        {
            var logp = F.log_softmax(logits.to_type(ScalarType.Float32), -1);                     // (k, V)
            var safe = picked.masked_fill(picked.lt(HeldScalars.Zero), HeldScalars.Zero);         // a NonFinite row gathers id 0
            var parts = new List<Tensor> { picked.to_type(ScalarType.Float64), logp.gather(1, safe.unsqueeze(1)).squeeze(1).to_type(ScalarType.Float64) };
            if (top > 0)
            {
                var (values, indices) = logp.topk(top, dim: -1);                                   // most likely first
                parts.Add(values.to_type(ScalarType.Float64).view(-1));
                parts.Add(indices.to_type(ScalarType.Float64).view(-1));
            }
            var all = cat(parts, 0);
            host = (all.device_type == DeviceType.CPU ? all : all.cpu()).data<double>().ToArray();
        }
        var result = new GeneratedToken[k];
        for (int i = 0; i < k; i++)
        {
            long id = (long)host[i];
            if (id == NonFinite) throw NonFiniteCheck.Outputs(lm, "next-token logits");
            int wanted = rows[i].Row.TopLogprobs ?? 0;
            var alternatives = new TokenLogProb[wanted];
            for (int j = 0; j < wanted; j++)
                alternatives[j] = new TokenLogProb((long)host[2 * k + k * top + i * top + j], (float)host[2 * k + i * top + j]);
            result[i] = new GeneratedToken(id, loops[i], rows[i].Row.TopLogprobs is null ? float.NaN : (float)host[k + i], alternatives);
        }
        return result;
    }

    /// <summary>
    /// Reads token ids (B) picked by <see cref="Pick(Tensor, double, double, Generator)"/> to the host (no copy when they are already on the CPU).
    /// </summary>
    /// <exception cref="NotFiniteNumberException">A row's logits were not finite (<see cref="NonFinite"/>).</exception>
    public static long[] ToHost(Tensor ids, OuroForCausalLM lm)
    {
        long[] result;
        if (ids.device_type == DeviceType.CPU) result = ids.data<long>().ToArray();
        else
        {
            using var host = ids.cpu();
            result = host.data<long>().ToArray();
        }
        if (Array.IndexOf(result, NonFinite) >= 0) throw NonFiniteCheck.Outputs(lm, "next-token logits");
        return result;
    }
}
