using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// A lazy, batched output view (the scorer's and the featurizer's): a cursor passes the input columns through from one
/// input cursor and, only when an output column is read, computes the next <c>batchSize</c> rows at once through
/// <see cref="ReadAheadBatches{T}"/>, reading ahead on a second input cursor that fetches only the token column (both
/// cursors walk the same rows in the same order: no shuffling).
/// </summary>
/// <typeparam name="T">One row's computed result.</typeparam>
internal abstract class BatchedOutputView<T>(IDataView input, DataViewSchema.Column tokens, DataViewSchema schema,
    Func<IReadOnlyList<int[]?>, T[]> compute, int batchSize, string work) : IDataView
{
    /// <summary>The view whose columns pass through.</summary>
    protected IDataView Input { get; } = input;

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; } = schema;

    public long? GetRowCount() => Input.GetRowCount();

    /// <summary>The input column shown at <paramref name="index"/> of <see cref="Schema"/>; null for an output column.</summary>
    protected abstract DataViewSchema.Column? InputColumn(int index);

    /// <summary>A <c>ValueGetter</c> of output <paramref name="column"/>, reading the current row's result from <paramref name="current"/>.</summary>
    protected abstract Delegate OutputGetter(DataViewSchema.Column column, Func<T> current);

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        var inputNeeded = Schema.Where(c => needed.Contains(c.Index)).Select(c => InputColumn(c.Index))
            .OfType<DataViewSchema.Column>().OrderBy(c => c.Index).ToList();
        bool computing = needed.Any(i => InputColumn(i) is null);
        return new Cursor(this, Input.GetRowCursor(inputNeeded), computing ? Input.GetRowCursor([tokens]) : null, needed);
    }

    /// <summary>The results of the rows an input cursor over the token column reads ahead.</summary>
    private ReadAheadBatches<T> ReadAhead(DataViewRowCursor ahead) => new(ahead, tokens, batchSize, compute, work);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly BatchedOutputView<T> _parent;
        private readonly DataViewRowCursor _main;
        private readonly ReadAheadBatches<T>? _results;
        private readonly HashSet<int> _active;
        private long _position = -1;

        public Cursor(BatchedOutputView<T> parent, DataViewRowCursor main, DataViewRowCursor? ahead, HashSet<int> active)
        {
            _parent = parent;
            _main = main;
            _active = active;
            if (ahead is not null) _results = parent.ReadAhead(ahead);
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => _main.Batch;

        public override bool IsColumnActive(DataViewSchema.Column column)
            => _parent.InputColumn(column.Index) is { } input ? _main.IsColumnActive(_main.Schema[input.Index]) : _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (!_main.MoveNext()) return false;
            _position++;
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => _main.GetIdGetter();

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (_parent.InputColumn(column.Index) is { } input) return _main.GetGetter<TValue>(_main.Schema[input.Index]);
            if (!_active.Contains(column.Index)) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            return _parent.OutputGetter(column, () => _results!.At(_position)) as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Invalid TValue in GetGetter: '{typeof(TValue)}', expected type: '{column.Type.RawType}'.");
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _main.Dispose();
                _results?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
