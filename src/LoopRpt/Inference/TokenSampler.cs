using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>Greedy, temperature and top-p sampling from next-token logits, with a caller-owned generator.</summary>
internal static class TokenSampler
{
    /// <summary>The id <see cref="Pick"/> returns for a row whose logits are not all finite; <see cref="ToHost"/> refuses it.</summary>
    public const long NonFinite = -1;

    /// <summary>
    /// One token per row of <paramref name="logits"/> (B, V), any device and type: an int64 tensor (B) on the logits'
    /// device (created in the caller's dispose scope). Greedy picks on that device; sampling draws on the CPU in float32
    /// (the generator is a CPU generator). A row with NaN/Inf logits (NaN weights, overflow) gets <see cref="NonFinite"/>
    /// instead of argmax's arbitrary pick, checked when the ids reach the host (no extra synchronization).
    /// </summary>
    public static Tensor Pick(Tensor logits, double temperature, double topP, Generator generator)
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
    /// Reads token ids (B) picked by <see cref="Pick"/> to the host (no copy when they are already on the CPU).
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
