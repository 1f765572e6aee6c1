using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// The sums behind every evaluation figure: for each token bucket k and each read-out r (a loop step, a Q-exit threshold,
/// a scorer's exit rule), the tokens, the correct argmax predictions, the gold log-probabilities and the 1-indexed exit
/// steps. The evaluator (LoopRpt.Evaluation: CLI, experiments, ML.NET Pareto sweep, hosting validation), the ML.NET
/// evaluator of scored data and <see cref="AdaptiveScore"/> all reduce through it, so a figure means the same on every
/// surface.
/// <para>The sums stay on the tensors' device in float64 and are read to the host once, by <see cref="Read"/>.</para>
/// <para>It lives in LoopRpt.Inference, below LoopRpt.Evaluation: the namespaces depend one way,
/// Evaluation → Inference → Model.</para>
/// </summary>
public sealed class ReadoutTally : IDisposable
{
    private readonly Tensor _tokens;     // (K)
    private readonly Tensor _sums;       // (3, K, R): correct, gold log-prob, exit step

    /// <summary>Creates zero sums for <paramref name="buckets"/> token buckets and <paramref name="readouts"/> read-outs on <paramref name="device"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than one bucket or read-out.</exception>
    public ReadoutTally(int buckets, int readouts, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(buckets, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(readouts, 1);
        Buckets = buckets;
        Readouts = readouts;
        _tokens = zeros(buckets, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        _sums = zeros(3, buckets, readouts, dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
    }

    /// <summary>Token buckets K.</summary>
    public int Buckets { get; }

    /// <summary>Read-outs R.</summary>
    public int Readouts { get; }

    /// <summary>
    /// Adds N tokens. <paramref name="masks"/> is (K, N), 1 where token n is in bucket k (0 for padding);
    /// <paramref name="correct"/>, <paramref name="goldLogProb"/> and <paramref name="exitStep"/> are (N, R). Values of
    /// tokens outside every bucket must be finite (they are multiplied by 0).
    /// </summary>
    public void Add(Tensor masks, Tensor correct, Tensor goldLogProb, Tensor exitStep)
    {
        using var scope = NewDisposeScope();
        var m = masks.to_type(ScalarType.Float64);
        _tokens.PlusInPlace(m.sum(1));
        var values = stack([correct, goldLogProb, exitStep]).to_type(ScalarType.Float64);      // (3, N, R)
        _sums.PlusInPlace(m.unsqueeze(0).matmul(values));                                             // (3, K, R)
    }

    /// <summary>The one host read.</summary>
    public ReadoutTotals Read()
    {
        var tokens = _tokens.cpu().data<double>().ToArray();
        var sums = _sums.cpu().data<double>().ToArray();
        return new ReadoutTotals(Buckets, Readouts, tokens, sums);
    }

    /// <summary>Disposes the device sums.</summary>
    public void Dispose()
    {
        _tokens.Dispose();
        _sums.Dispose();
    }
}

/// <summary>The host copy of a <see cref="ReadoutTally"/>; every mean is NaN for an empty bucket.</summary>
public sealed class ReadoutTotals
{
    private readonly double[] _tokens;
    private readonly double[] _sums;

    internal ReadoutTotals(int buckets, int readouts, double[] tokens, double[] sums)
        => (Buckets, Readouts, _tokens, _sums) = (buckets, readouts, tokens, sums);

    /// <summary>Token buckets K.</summary>
    public int Buckets { get; }

    /// <summary>Read-outs R.</summary>
    public int Readouts { get; }

    /// <summary>Tokens in bucket <paramref name="k"/>.</summary>
    public long Tokens(int k) => (long)_tokens[k];

    /// <summary>Share of bucket <paramref name="k"/>'s tokens whose argmax under read-out <paramref name="r"/> is the gold token.</summary>
    public double Accuracy(int k, int r) => Mean(0, k, r);

    /// <summary>Mean negative gold log-probability (nats per token) of bucket <paramref name="k"/> under read-out <paramref name="r"/>.</summary>
    public double NegativeLogLikelihood(int k, int r) => -Mean(1, k, r);

    /// <summary>Mean 1-indexed exit step of bucket <paramref name="k"/> under read-out <paramref name="r"/>.</summary>
    public double MeanExitStep(int k, int r) => Mean(2, k, r);

    /// <summary>Sums over bucket <paramref name="k"/> of read-out <paramref name="r"/>: correct tokens, gold log-probabilities, exit steps.</summary>
    public (double Correct, double GoldLogProb, double ExitSteps) Sums(int k, int r)
        => (_sums[(0 * Buckets + k) * Readouts + r], _sums[(1 * Buckets + k) * Readouts + r], _sums[(2 * Buckets + k) * Readouts + r]);

    /// <summary>True when a gold log-probability sum is not finite (NaN weights or overflow in a counted token).</summary>
    public bool HasNonFinite => _sums.Any(v => !double.IsFinite(v));

    private double Mean(int what, int k, int r) => _tokens[k] > 0 ? _sums[(what * Buckets + k) * Readouts + r] / _tokens[k] : double.NaN;
}
