using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>Input-column checks with ML.NET's exception type and message shapes.</summary>
internal static class SchemaChecks
{
    public static ArgumentOutOfRangeException Missing(string column)
        => new("inputSchema", $"Could not find input column '{column}'");

    public static ArgumentOutOfRangeException Mismatch(string column, string expected, string actual)
        => new("inputSchema", $"Schema mismatch for input column '{column}': expected {expected}, got {actual}");

    /// <summary>The <c>ModelDirectory</c> option of a loading estimator: it must name an existing directory.</summary>
    public static void ModelDirectory([System.Diagnostics.CodeAnalysis.NotNull] string? directory, string paramName)
    {
        if (string.IsNullOrWhiteSpace(directory))
            throw new ArgumentException("ModelDirectory must name a LoopRpt model directory.", paramName);
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
    }

    public static DataViewSchema.Column Text(DataViewSchema schema, string column)
    {
        var col = schema.GetColumnOrNull(column) ?? throw Missing(column);
        if (col.Type is not TextDataViewType) throw Mismatch(column, "String", col.Type.ToString() ?? "?");
        return col;
    }

    public static void Text(SchemaShape schema, string column)
    {
        var col = Find(schema, column);
        if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not TextDataViewType) throw Mismatch(column, "String", Describe(col));
    }

    public static DataViewSchema.Column Tokens(DataViewSchema schema, string column)
    {
        var col = schema.GetColumnOrNull(column) ?? throw Missing(column);
        if (col.Type is not VectorDataViewType v || (v.ItemType != NumberDataViewType.Int32 && v.ItemType != NumberDataViewType.Int64))
            throw Mismatch(column, "Vector<Int32> or Vector<Int64> (token ids)", col.Type.ToString() ?? "?");
        return col;
    }

    public static DataViewType Tokens(SchemaShape schema, string column)
    {
        var col = Find(schema, column);
        if (col.Kind == SchemaShape.Column.VectorKind.Scalar || (col.ItemType != NumberDataViewType.Int32 && col.ItemType != NumberDataViewType.Int64))
            throw Mismatch(column, "Vector<Int32> or Vector<Int64> (token ids)", Describe(col));
        return new VectorDataViewType((PrimitiveDataViewType)col.ItemType!);
    }

    private static SchemaShape.Column Find(SchemaShape schema, string column)
    {
        foreach (var c in schema)
            if (c.Name == column) return c;
        throw Missing(column);
    }

    private static string Describe(SchemaShape.Column col)
        => col.Kind == SchemaShape.Column.VectorKind.Scalar ? col.ItemType.ToString() ?? "?" : $"Vector<{col.ItemType}>";

    /// <summary>Reads an Int32 or Int64 token vector as int[] (null for an empty vector).</summary>
    public static ValueGetter<int[]?> TokenGetter(DataViewRowCursor cursor, DataViewSchema.Column col)
    {
        var item = ((VectorDataViewType)col.Type).ItemType;
        if (item == NumberDataViewType.Int32)
        {
            var g = cursor.GetGetter<VBuffer<int>>(col);
            VBuffer<int> buf = default;
            return (ref int[]? v) => { g(ref buf); v = buf.Length == 0 ? null : buf.DenseValues().ToArray(); };
        }
        var g64 = cursor.GetGetter<VBuffer<long>>(col);
        VBuffer<long> b64 = default;
        return (ref int[]? v) =>
        {
            g64(ref b64);
            v = b64.Length == 0 ? null : b64.DenseValues().Select(x => x is >= int.MinValue and <= int.MaxValue ? (int)x
                : throw new InvalidOperationException($"Token id {x} in column '{col.Name}' does not fit in Int32.")).ToArray();
        };
    }
}
