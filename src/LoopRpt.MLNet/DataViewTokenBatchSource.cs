using LoopRpt.Data;
using Microsoft.ML;

namespace LoopRpt.MLNet;

/// <summary>
/// Streams training batches from a token column of an <see cref="IDataView"/> without materializing the corpus.
/// <para>Stream: rows in cursor order, each row's ids followed by the optional separator (end-of-text) id, packed into one
/// token stream cut into windows of S+1 tokens (consecutive windows share one token, so every token is a target once).
/// Windows are shuffled within blocks of <see cref="ShuffleWindow"/> windows by a generator seeded with
/// (seed, epoch, block); at the end of the data a new epoch starts from the first row.</para>
/// <para>Batch k of the stream is micro-batch <c>microStep</c> of optimizer step <c>step</c> where k = the number of
/// micro-batches of all earlier steps (from the plan's gradient accumulation) + microStep. Resume reproduces the position
/// by re-reading the stream from the start and skipping the k batches already consumed (no state is saved; the cost is
/// one pass over the consumed data without training). Requests out of order restart the stream the same way.</para>
/// </summary>
public sealed class DataViewTokenBatchSource : ITokenBatchSource, IDisposable
{
    /// <summary>Windows shuffled together (the only buffering of the stream).</summary>
    public const int ShuffleWindow = 256;

    private readonly IDataView _data;
    private readonly Microsoft.ML.DataViewSchema.Column _column;
    private readonly int? _separator;
    private readonly long _seed;
    private readonly Func<long, long> _firstBatchOfStep;
    private readonly bool _shuffle;
    private IEnumerator<int[]>? _windows;
    private int _vocabularyLimit = int.MaxValue;
    private long _next;

    /// <param name="data">The data.</param>
    /// <param name="column">Token column (Vector of Int32 or Int64).</param>
    /// <param name="batchSize">Rows per batch (B).</param>
    /// <param name="sequenceLength">Tokens per row (S).</param>
    /// <param name="separatorTokenId">Id appended after every row (null: none, e.g. when the tokenizer adds BOS/EOS).</param>
    /// <param name="seed">Shuffle seed.</param>
    /// <param name="firstBatchOfStep">Stream index of micro-batch 0 of a step (default: step, i.e. one micro-batch per step).</param>
    /// <param name="shuffle">Shuffle windows within blocks (default true).</param>
    public DataViewTokenBatchSource(IDataView data, string column, int batchSize, int sequenceLength, int? separatorTokenId, long seed,
                                    Func<long, long>? firstBatchOfStep = null, bool shuffle = true)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be at least 1.");
        if (sequenceLength < 1) throw new ArgumentOutOfRangeException(nameof(sequenceLength), sequenceLength, "Sequence length must be at least 1.");
        _data = data;
        _column = SchemaChecks.Tokens(data.Schema, column);
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
        _separator = separatorTokenId;
        _seed = seed;
        _firstBatchOfStep = firstBatchOfStep ?? (s => s);
        _shuffle = shuffle;
    }

    /// <inheritdoc/>
    public int BatchSize { get; }
    /// <inheritdoc/>
    public int SequenceLength { get; }

    /// <summary>Ids must lie below this (the model's vocab_size); checked as rows are read. Default: no limit.</summary>
    public int VocabularyLimit
    {
        get => _vocabularyLimit;
        set => _vocabularyLimit = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(VocabularyLimit), value, "VocabularyLimit must be at least 1.");
    }

    /// <summary>Rows read from the data so far (all passes).</summary>
    public long RowsRead { get; private set; }

    /// <summary>Completed passes over the data.</summary>
    public int Epoch { get; private set; }

    /// <inheritdoc/>
    public TokenBatch GetBatch(long step, int microStep)
    {
        long index = _firstBatchOfStep(step) + microStep;
        if (_windows is null || index < _next)
        {
            _windows?.Dispose();
            _windows = Windows().GetEnumerator();
            _next = 0;
        }
        while (_next < index)
        {
            for (int b = 0; b < BatchSize; b++) NextWindow();
            _next++;
        }
        var rows = new ReadOnlyMemory<int>[BatchSize];
        for (int b = 0; b < BatchSize; b++) rows[b] = NextWindow();
        _next++;
        return TokenBatch.FromWindows(rows, SequenceLength);
    }

    private int[] NextWindow()
    {
        if (!_windows!.MoveNext()) throw new InvalidOperationException("The token stream ended unexpectedly.");
        return _windows.Current;
    }

    /// <summary>The endless (epoch after epoch) sequence of shuffled windows.</summary>
    private IEnumerable<int[]> Windows()
    {
        for (int epoch = 0; ; epoch++)
        {
            Epoch = epoch;
            int produced = 0, block = 0;
            var buffer = new List<int[]>(ShuffleWindow);
            foreach (var w in EpochWindows())
            {
                buffer.Add(w);
                produced++;
                if (buffer.Count == ShuffleWindow)
                {
                    foreach (var x in Shuffled(buffer, epoch, block++)) yield return x;
                    buffer.Clear();
                }
            }
            foreach (var x in Shuffled(buffer, epoch, block)) yield return x;
            if (produced == 0)
                throw new InvalidOperationException(
                    $"Cannot train: column '{_column.Name}' holds fewer than {SequenceLength + 1} tokens in total (one training window); the data is empty or all texts are empty.");
        }
    }

    private IEnumerable<int[]> Shuffled(List<int[]> buffer, int epoch, int block)
    {
        var items = buffer.ToArray();
        if (_shuffle)
        {
            var rng = new Random(Seeds.Mix32(_seed, epoch, block));
            for (int i = items.Length - 1; i > 0; i--)
            {
                int j = rng.Next(i + 1);
                (items[i], items[j]) = (items[j], items[i]);
            }
        }
        return items;
    }

    /// <summary>One pass: rows → packed stream → windows of S+1 overlapping by one token.</summary>
    private IEnumerable<int[]> EpochWindows()
    {
        int w = SequenceLength + 1;
        var pending = new List<int>(w * 2);
        using var cursor = _data.GetRowCursor([_column]);
        var getter = SchemaChecks.TokenGetter(cursor, _column);
        int[]? ids = null;
        while (cursor.MoveNext())
        {
            RowsRead++;
            getter(ref ids);
            if (ids is not null)
            {
                foreach (var id in ids)
                    if (id < 0 || id >= _vocabularyLimit)
                        throw new InvalidOperationException($"Token id {id} in column '{_column.Name}' (row {RowsRead - 1}) is outside the model's vocabulary [0, {_vocabularyLimit}).");
                pending.AddRange(ids);
            }
            if (_separator is { } sep) pending.Add(sep);
            int start = 0;
            while (pending.Count - start >= w)
            {
                yield return pending.GetRange(start, w).ToArray();
                start += SequenceLength;
            }
            if (start > 0) pending.RemoveRange(0, start);
        }
    }

    /// <summary>Windows in one pass over the data (a full streaming pass; used to turn epochs into steps).</summary>
    public long CountWindows()
    {
        long n = 0;
        foreach (var _ in EpochWindows()) n++;
        return n;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _windows?.Dispose();
        _windows = null;
    }
}
