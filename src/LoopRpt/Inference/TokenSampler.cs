using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Inference;

/// <summary>Greedy, temperature and top-p sampling from next-token logits, with a caller-owned generator.</summary>
internal static class TokenSampler
{
    /// <summary>
    /// One token per row of <paramref name="logits"/> (B, V), any device and type. Greedy picks on the logits' device;
    /// sampling draws on the CPU in float32 (the generator is a CPU generator).
    /// </summary>
    public static long[] Sample(Tensor logits, double temperature, double topP, Generator generator)
    {
        using var scope = NewDisposeScope();
        Tensor picked;
        if (temperature == 0) picked = logits.argmax(-1).cpu();                         // (B)
        else
        {
            logits = logits.to_type(ScalarType.Float32).cpu();
            var probs = F.softmax(logits / temperature, -1);                              // (B, V)
            if (topP < 1)
            {
                var (sorted, order) = probs.sort(-1, descending: true);
                // Keep the smallest prefix of the sorted tokens whose mass reaches p: drop a token once the mass before it does.
                var drop = (sorted.cumsum(-1) - sorted) >= topP;
                var choice = multinomial(sorted.masked_fill(drop, 0), 1, generator: generator); // (B, 1) in sorted order
                picked = order.gather(-1, choice).squeeze(-1);
            }
            else picked = multinomial(probs, 1, generator: generator).squeeze(-1);
        }
        if (picked.dtype != ScalarType.Int64) picked = picked.to_type(ScalarType.Int64);
        return picked.data<long>().ToArray();
    }
}
