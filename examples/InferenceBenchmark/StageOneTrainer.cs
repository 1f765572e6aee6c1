using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace InferenceBenchmark;

/// <summary>
/// The smallest trainer that gives the benchmark a model with a meaningful exit gate: Ouro Stage I
/// (docs/method.md §3.1), L = sum_t p(t) CE_t - beta H(p), Adam with linear warmup, gradient clipping at 1.
/// Not the project's trainer; only here so the benchmark measures exits a trained gate really takes.
/// </summary>
internal static class StageOneTrainer
{
    public static void Train(OuroForCausalLM lm, long[] corpus, int steps, int batch, int seqLen, double lr, double beta, int seed)
    {
        var rng = new Random(seed);
        using var optimizer = optim.Adam(lm.parameters(), lr);
        lm.train();
        int vocab = lm.Config.VocabSize;
        for (int step = 1; step <= steps; step++)
        {
            using var scope = NewDisposeScope();
            var starts = Enumerable.Range(0, batch).Select(_ => rng.Next(corpus.Length - seqLen - 1)).ToArray();
            var window = tensor(starts.SelectMany(s => corpus.AsSpan(s, seqLen + 1).ToArray()).ToArray(), [batch, seqLen + 1]);
            var x = window.narrow(1, 0, seqLen);
            var y = window.narrow(1, 1, seqLen);

            var output = lm.Forward(x);
            var ce = stack(output.Hidden.Select(h =>
                F.cross_entropy(lm.Logits(h).reshape(-1, vocab), y.reshape(-1), reduction: nn.Reduction.None).view(batch, seqLen)).ToArray(), -1); // (B, S, T)
            var p = output.ExitProbabilities();                                                                  // (B, S, T)
            var loss = (p * ce).sum(-1).mean() - beta * ExitDistribution.Entropy(output.GateLogits).mean();

            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr * Math.Min(1.0, step / (0.05 * steps));
            optimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(lm.parameters(), 1.0);
            optimizer.step();
            if (step % 50 == 0 || step == steps)
                Console.WriteLine($"  train step {step,4}: stage-I loss {loss.item<float>():F3}, last-step CE {ce.select(-1, -1).mean().item<float>():F3}, first-step CE {ce.select(-1, 0).mean().item<float>():F3}");
        }
        lm.eval();
    }
}
