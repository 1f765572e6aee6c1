using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// Per-token results of <see cref="AdaptiveExitScorer.Score"/>, all (B, S). The tensors belong to this object: dispose
/// it (or move them) when done.
/// </summary>
public sealed class AdaptiveScore : IDisposable
{
    internal AdaptiveScore(Tensor goldLogProbs, Tensor exitSteps, Tensor predictions, Tensor targets, Tensor predictionLogProbs,
        Tensor entropies, int loops, int loopsRun)
    {
        PredictionLogProbs = predictionLogProbs;
        Entropies = entropies;
        GoldLogProbs = goldLogProbs;
        ExitSteps = exitSteps;
        Predictions = predictions;
        Targets = targets;
        Loops = loops;
        LoopsRun = loopsRun;
        // The evaluation core's reduction (ReadoutTally), one host read: bucket 0 = computed tokens (their loops),
        // bucket 1 = scored tokens (correct, gold log-prob).
        using var scope = NewDisposeScope();
        using var tally = new ReadoutTally(2, 1, exitSteps.device);
        tally.Add(stack([exitSteps.AtLeast(0).flatten(), targets.AtLeast(0).flatten()]), (predictions == targets).view(-1, 1),
            goldLogProbs.view(-1, 1), exitSteps.Plus(1L).ClampMin(0).view(-1, 1));
        var totals = tally.Read();
        ComputedTokens = totals.Tokens(0);
        LoopSteps = (long)totals.Sums(0, 0).ExitSteps;
        ScoredTokens = totals.Tokens(1);
        (double correct, SumGoldLogProb, _) = totals.Sums(1, 0);
        Correct = (long)correct;
    }

    /// <summary>log p(target) at each token's exit state, float32; 0 where there is no target.</summary>
    public Tensor GoldLogProbs { get; }

    /// <summary>Exit loop per token, 0-based int64; -1 for padding (not computed).</summary>
    public Tensor ExitSteps { get; }

    /// <summary>Greedy next token (argmax) at each token's exit state; -1 for padding.</summary>
    public Tensor Predictions { get; }

    /// <summary>The scored next tokens; -1 where none.</summary>
    public Tensor Targets { get; }

    /// <summary>log p of <see cref="Predictions"/> (the most likely next token) at each token's exit state, float32; 0 for padding.</summary>
    public Tensor PredictionLogProbs { get; }

    /// <summary>Entropy (nats) of the next-token distribution at each token's exit state, float32; 0 for padding.</summary>
    public Tensor Entropies { get; }

    /// <summary>The model's loops T.</summary>
    public int Loops { get; }

    /// <summary>Loops that ran for at least one token (fewer than T when every token exited early).</summary>
    public int LoopsRun { get; }

    /// <summary>Tokens computed (padding excluded).</summary>
    public long ComputedTokens { get; }

    /// <summary>Sum over computed tokens of loops run (exit step + 1).</summary>
    public long LoopSteps { get; }

    /// <summary>Tokens with a target.</summary>
    public long ScoredTokens { get; }

    /// <summary>Scored tokens whose argmax equals the target.</summary>
    public long Correct { get; }

    /// <summary>Sum of gold log-probs over scored tokens.</summary>
    public double SumGoldLogProb { get; }

    /// <summary>Mean exit step, 1-indexed (the paper's "mean exit steps"), over computed tokens.</summary>
    public double MeanExitStep => ComputedTokens == 0 ? double.NaN : (double)LoopSteps / ComputedTokens;

    /// <summary>Loops run over loops available: (sum of loops run) / (computed tokens × T).</summary>
    public double ComputeFraction => ComputedTokens == 0 ? double.NaN : (double)LoopSteps / (ComputedTokens * (double)Loops);

    /// <summary>Next-token accuracy over scored tokens.</summary>
    public double Accuracy => ScoredTokens == 0 ? double.NaN : (double)Correct / ScoredTokens;

    /// <summary>Mean negative log-likelihood (nats per scored token).</summary>
    public double MeanNll => ScoredTokens == 0 ? double.NaN : -SumGoldLogProb / ScoredTokens;

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        GoldLogProbs.Dispose();
        ExitSteps.Dispose();
        Predictions.Dispose();
        Targets.Dispose();
        PredictionLogProbs.Dispose();
        Entropies.Dispose();
    }
}

/// <summary>Totals of <see cref="AdaptiveExitScorer.Evaluate"/> over many sequences.</summary>
/// <param name="Loops">The model's loops T.</param>
/// <param name="ComputedTokens">Tokens computed.</param>
/// <param name="LoopSteps">Sum over computed tokens of loops run.</param>
/// <param name="ScoredTokens">Tokens with a next-token target.</param>
/// <param name="Correct">Scored tokens predicted correctly (argmax).</param>
/// <param name="SumGoldLogProb">Sum of gold log-probs over scored tokens.</param>
public sealed record AdaptiveExitSummary(int Loops, long ComputedTokens, long LoopSteps, long ScoredTokens, long Correct, double SumGoldLogProb)
{
    /// <summary>Mean exit step, 1-indexed, over computed tokens.</summary>
    public double MeanExitStep => ComputedTokens == 0 ? double.NaN : (double)LoopSteps / ComputedTokens;

    /// <summary>(sum of loops run) / (computed tokens × T).</summary>
    public double ComputeFraction => ComputedTokens == 0 ? double.NaN : (double)LoopSteps / (ComputedTokens * (double)Loops);

    /// <summary>Next-token accuracy over scored tokens.</summary>
    public double Accuracy => ScoredTokens == 0 ? double.NaN : (double)Correct / ScoredTokens;

    /// <summary>Mean negative log-likelihood (nats per scored token).</summary>
    public double MeanNll => ScoredTokens == 0 ? double.NaN : -SumGoldLogProb / ScoredTokens;

    internal sealed class Builder(int loops)
    {
        private long _computed, _steps, _scored, _correct;
        private double _logProb;

        public void Add(AdaptiveScore s)
        {
            _computed += s.ComputedTokens;
            _steps += s.LoopSteps;
            _scored += s.ScoredTokens;
            _correct += s.Correct;
            _logProb += s.SumGoldLogProb;
        }

        public AdaptiveExitSummary Build() => new(loops, _computed, _steps, _scored, _correct, _logProb);
    }
}
