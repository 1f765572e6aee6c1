using LoopRpt.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Hosting;

/// <summary>Score of one token sequence.</summary>
/// <param name="MeanLogProb">Mean log-probability of tokens 1..n-1 given their prefix (0 for a one-token sequence).</param>
/// <param name="NextToken">Most likely next token after the whole sequence.</param>
/// <param name="NextTokenLogProb">Its log-probability.</param>
/// <param name="Version">Model version that produced the score.</param>
public sealed record SequenceScore(double MeanLogProb, int NextToken, double NextTokenLogProb, int Version);

/// <summary>Batched inference on a leased model: safe to call from many threads at once (no_grad, a dispose scope per call).</summary>
public static class ModelScoring
{
    /// <summary>Scores <paramref name="sequences"/> (each at least one token) in one batch, read out under <paramref name="exit"/> (default: last step).</summary>
    /// <exception cref="NotFiniteNumberException">The model's log-probabilities are not finite (NaN weights, overflow).</exception>
    public static IReadOnlyList<SequenceScore> Score(this ModelLease lease, IReadOnlyList<int[]> sequences, ExitMode? exit = null)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count == 0) return [];
        var lm = lease.Model;
        int vocab = lm.Config.VocabSize;
        int s = sequences.Max(q => q.Length);
        for (int b = 0; b < sequences.Count; b++)
        {
            if (sequences[b].Length == 0) throw new ArgumentException($"Sequence {b} is empty; a score needs at least one token.", nameof(sequences));
            foreach (var id in sequences[b])
                if (id < 0 || id >= vocab) throw new ArgumentOutOfRangeException(nameof(sequences), id, $"Sequence {b} holds token id {id}; the model's vocabulary is [0, {vocab}).");
        }

        var inputs = new long[sequences.Count * s];
        var targets = new long[inputs.Length];
        Array.Fill(targets, -1);
        for (int b = 0; b < sequences.Count; b++)
        {
            var q = sequences[b];
            for (int i = 0; i < q.Length; i++)
            {
                inputs[b * s + i] = q[i];
                if (i + 1 < q.Length) targets[b * s + i] = q[i + 1];
            }
        }

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = tensor(inputs, [sequences.Count, s]).to(lm.Device);                       // (B, S)
        var gold = tensor(targets, [sequences.Count, s]).to(lm.Device);
        var output = lm.Forward(ids);
        var logp = F.log_softmax((exit ?? ExitMode.Last).Logits(lm, output).to_type(ScalarType.Float32), -1);   // (B, S, V)
        var mask = (gold >= 0).to_type(ScalarType.Float32);
        var goldLogp = logp.gather(-1, gold.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask;  // (B, S)
        var mean = goldLogp.sum(-1) / mask.sum(-1).clamp_min(1);                            // (B)
        var last = tensor(sequences.Select(q => (long)q.Length - 1).ToArray()).to(lm.Device);
        var lastLogp = logp.gather(1, last.view(-1, 1, 1).expand(-1, 1, logp.shape[^1])).squeeze(1);   // (B, V)
        var (best, arg) = lastLogp.max(-1);
        var means = mean.to_type(ScalarType.Float64).cpu().data<double>().ToArray();
        var bests = best.to_type(ScalarType.Float64).cpu().data<double>().ToArray();
        var args = arg.cpu().data<long>().ToArray();
        if (!means.All(double.IsFinite) || !bests.All(double.IsFinite)) throw NonFiniteCheck.Outputs(lm, "log-probabilities");
        return Enumerable.Range(0, sequences.Count).Select(b => new SequenceScore(means[b], (int)args[b], bests[b], lease.Version)).ToList();
    }
}
