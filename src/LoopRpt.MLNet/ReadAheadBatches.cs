using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// Per-row results of a model computed <c>batchSize</c> rows at a time, for a cursor of a lazy output view
/// (<see cref="ScoringDataView"/>, <see cref="FeaturesDataView"/>): a second input cursor, reading only the token
/// column, runs ahead of the main one to gather the next batch when a row's result is first asked for. Both cursors must
/// walk the same rows in the same order (no shuffling); rows whose results are never asked for are skipped uncomputed.
/// </summary>
internal sealed class ReadAheadBatches<T>(DataViewRowCursor ahead, DataViewSchema.Column tokens, int batchSize,
    Func<IReadOnlyList<int[]?>, T[]> compute, string work) : IDisposable
{
    private readonly ValueGetter<int[]?> _tokens = SchemaChecks.TokenGetter(ahead, ahead.Schema[tokens.Index]);
    private T[] _batch = [];
    private long _batchStart = -1, _aheadPosition = -1;

    /// <summary>The result of the row at <paramref name="position"/> of the main cursor (positions only increase).</summary>
    public T At(long position)
    {
        if (position < 0) throw new InvalidOperationException("The cursor is not on a row; call MoveNext first.");
        if (position >= _batchStart && position < _batchStart + _batch.Length) return _batch[position - _batchStart];
        while (_aheadPosition < position - 1)
        {
            if (!ahead.MoveNext()) throw Fewer();
            _aheadPosition++;
        }
        var rows = new List<int[]?>(batchSize);
        while (rows.Count < batchSize && ahead.MoveNext())
        {
            _aheadPosition++;
            int[]? t = null;
            _tokens(ref t);
            rows.Add(t);
        }
        if (rows.Count == 0) throw Fewer();
        _batch = compute(rows);
        _batchStart = position;
        return _batch[0];
    }

    /// <summary>A getter copying the float vector <paramref name="values"/> returns into ML.NET's buffer.</summary>
    public static ValueGetter<VBuffer<float>> VectorGetter(Func<float[]> values) => (ref VBuffer<float> v) =>
    {
        var src = values();
        var editor = VBufferEditor.Create(ref v, src.Length);
        src.AsSpan().CopyTo(editor.Values);
        v = editor.Commit();
    };

    private InvalidOperationException Fewer() => new($"The input view returned fewer rows on a second cursor; {work} needs a deterministic input.");

    public void Dispose() => ahead.Dispose();
}
