using static TorchSharp.torch;

namespace LoopRpt.Data;

/// <summary>
/// One training micro-batch: inputs (B, S) and next-token targets (B, S), int64, on the host until moved.
/// Targets equal to <see cref="IgnoreIndex"/> (padding) are excluded from every loss and metric.
/// </summary>
public sealed class TokenBatch
{
    public const long IgnoreIndex = -1;

    public TokenBatch(long[] inputs, long[] targets, int batchSize, int sequenceLength)
    {
        if (inputs.Length != batchSize * sequenceLength || targets.Length != inputs.Length)
            throw new ArgumentException($"A batch of {batchSize} × {sequenceLength} needs {batchSize * sequenceLength} inputs and targets; got {inputs.Length} and {targets.Length}.");
        Inputs = inputs;
        Targets = targets;
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
    }

    public long[] Inputs { get; }
    public long[] Targets { get; }
    public int BatchSize { get; }
    public int SequenceLength { get; }

    /// <summary>Tokens that carry a loss (targets that are not padding).</summary>
    public long TargetTokenCount => Targets.LongCount(t => t != IgnoreIndex);

    /// <summary>Builds a batch from rows of S+1 tokens each (input = row[..S], target = row[1..]).</summary>
    public static TokenBatch FromWindows(IReadOnlyList<ReadOnlyMemory<int>> rows, int sequenceLength)
    {
        var inputs = new long[rows.Count * sequenceLength];
        var targets = new long[inputs.Length];
        Array.Fill(targets, IgnoreIndex);
        for (int b = 0; b < rows.Count; b++)
        {
            var row = rows[b].Span;
            if (row.Length > sequenceLength + 1) throw new ArgumentException($"Row {b} has {row.Length} tokens; at most {sequenceLength + 1} fit.");
            for (int s = 0; s < sequenceLength; s++)
            {
                inputs[b * sequenceLength + s] = s < row.Length ? row[s] : 0;
                if (s + 1 < row.Length) targets[b * sequenceLength + s] = row[s + 1];
            }
        }
        return new TokenBatch(inputs, targets, rows.Count, sequenceLength);
    }

    /// <summary>Inputs and targets as (B, S) int64 tensors on <paramref name="device"/>.</summary>
    public (Tensor Inputs, Tensor Targets) ToTensors(Device device)
    {
        var shape = new long[] { BatchSize, SequenceLength };
        return (tensor(Inputs, shape).to(device), tensor(Targets, shape).to(device));
    }
}

/// <summary>
/// Supplies training batches by (optimizer step, micro-step). Sources that are a pure function of those indices
/// (and their seed) make resume exact without saving any sampler state.
/// </summary>
public interface ITokenBatchSource
{
    int BatchSize { get; }
    int SequenceLength { get; }
    TokenBatch GetBatch(long step, int microStep);
}

/// <summary>
/// Random windows of S+1 tokens from one packed token stream (documents joined with an end-of-text token by the
/// caller). Window starts for (step, micro) come from a local generator seeded by (seed, step, micro).
/// </summary>
public sealed class PackedTokenSource : ITokenBatchSource
{
    private readonly int[] _tokens;
    private readonly long _seed;

    public PackedTokenSource(int[] tokens, int batchSize, int sequenceLength, long seed)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be at least 1.");
        if (sequenceLength < 1) throw new ArgumentOutOfRangeException(nameof(sequenceLength), sequenceLength, "Sequence length must be at least 1.");
        if (tokens.Length < sequenceLength + 1)
            throw new ArgumentException($"The token stream has {tokens.Length} tokens; a training window needs at least {sequenceLength + 1}.", nameof(tokens));
        _tokens = tokens;
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
        _seed = seed;
    }

    public int BatchSize { get; }
    public int SequenceLength { get; }
    public int TokenCount => _tokens.Length;

    public TokenBatch GetBatch(long step, int microStep)
    {
        var rng = new Random(Seeds.Mix32(_seed, step, microStep));
        int maxStart = _tokens.Length - (SequenceLength + 1);
        var rows = new ReadOnlyMemory<int>[BatchSize];
        for (int b = 0; b < BatchSize; b++)
        {
            int start = rng.Next(maxStart + 1);
            rows[b] = _tokens.AsMemory(start, SequenceLength + 1);
        }
        return TokenBatch.FromWindows(rows, SequenceLength);
    }
}
