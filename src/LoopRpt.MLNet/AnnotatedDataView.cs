using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>A view that is <c>inner</c> with a different schema of the same columns (the same types, other annotations).</summary>
internal sealed class AnnotatedDataView(IDataView inner, DataViewSchema schema) : IDataView
{
    public DataViewSchema Schema { get; } = schema;

    public bool CanShuffle => inner.CanShuffle;

    public long? GetRowCount() => inner.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        => new Cursor(Schema, inner.GetRowCursor(Inner(columnsNeeded), rand));

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [.. inner.GetRowCursorSet(Inner(columnsNeeded), n, rand).Select(c => new Cursor(Schema, c))];

    private IEnumerable<DataViewSchema.Column> Inner(IEnumerable<DataViewSchema.Column> columns) => columns.Select(c => inner.Schema[c.Index]);

    private sealed class Cursor(DataViewSchema schema, DataViewRowCursor inner) : DataViewRowCursor
    {
        public override DataViewSchema Schema => schema;
        public override long Position => inner.Position;
        public override long Batch => inner.Batch;
        public override bool MoveNext() => inner.MoveNext();
        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => inner.GetGetter<TValue>(inner.Schema[column.Index]);
        public override ValueGetter<DataViewRowId> GetIdGetter() => inner.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => inner.IsColumnActive(inner.Schema[column.Index]);

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
