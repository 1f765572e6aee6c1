using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Checkpoints;

/// <summary>Shape, dtype and byte range of one tensor in a safetensors file.</summary>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// The safetensors format (HF): an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// (<c>{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}</c>), then the raw data,
/// offsets relative to the end of the header. Tensors are streamed one at a time: a multi-GB file is never held twice.
/// </summary>
public static class SafeTensors
{
    /// <summary>Largest header accepted (the format's own limit is 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float16 => "F16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"dtype {t} has no safetensors name."),
    };

    public static ScalarType ScalarTypeOf(string name) => name switch
    {
        "F32" => ScalarType.Float32,
        "BF16" => ScalarType.BFloat16,
        "F16" => ScalarType.Float16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new NotSupportedException($"safetensors dtype '{name}' is not supported."),
    };

    public static int ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "BF16" or "F16" or "I16" => 2,
        _ => 1,
    };

    /// <summary>
    /// Writes tensors (any device, converted to CPU one at a time) to <paramref name="path"/>. Not atomic by itself:
    /// callers write into a temporary directory or path and rename (see <see cref="AtomicDirectory"/>).
    /// </summary>
    /// <param name="path">The file to write.</param>
    /// <param name="tensors">Names and tensors, written in this order.</param>
    /// <param name="metadata">The <c>__metadata__</c> string map (HF tools expect <c>format = pt</c>).</param>
    /// <param name="dtype">Stored dtype; each tensor is converted just before it is written, so at most one converted tensor
    /// exists at a time (null: each tensor's own dtype).</param>
    public static void Save(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null, ScalarType? dtype = null)
    {
        var list = tensors.ToList();
        var dup = list.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"Tensor name '{dup.Key}' appears twice.", nameof(tensors));

        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, t) in list)
        {
            var stored = dtype ?? t.dtype;
            long bytes = t.numel() * ElementSize(DTypeName(stored));
            header[name] = new { dtype = DTypeName(stored), shape = t.shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        var json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padded = (json.Length + 7) / 8 * 8;                  // align data to 8 bytes, padding with spaces (as the reference writer)

        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        fs.Write(len);
        fs.Write(json);
        for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
        foreach (var (_, t) in list)
        {
            using var scope = NewDisposeScope();
            var cpuT = (dtype is { } d && d != t.dtype ? t.detach().to_type(d) : t.detach()).cpu().contiguous();
            if (cpuT.numel() > 0) fs.Write(cpuT.bytes);
        }
        fs.Flush(flushToDisk: true);
    }

    /// <summary>Opens a file and parses its header; tensor data is read on demand.</summary>
    public static SafeTensorsFile Open(string path) => new(path);
}

/// <summary>An open safetensors file: header parsed and validated, data read per tensor.</summary>
public sealed class SafeTensorsFile : IDisposable
{
    private readonly FileStream _stream;
    private readonly long _dataStart;

    internal SafeTensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"Weights file '{path}' does not exist.", path);
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        try
        {
            (Tensors, Metadata, _dataStart) = ReadHeader();
        }
        catch
        {
            _stream.Dispose();
            throw;
        }
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    private InvalidDataException Corrupt(string what) => new($"'{Path}' is not a valid safetensors file: {what}.");

    private (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>, long) ReadHeader()
    {
        long fileLength = _stream.Length;
        if (fileLength < 8) throw Corrupt($"the file has {fileLength} bytes, fewer than the 8-byte header length");
        Span<byte> len = stackalloc byte[8];
        _stream.ReadExactly(len);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (n == 0 || n > SafeTensors.MaxHeaderBytes || (long)n > fileLength - 8)
            throw Corrupt($"the header length {n} is impossible for a file of {fileLength} bytes (truncated or not safetensors)");
        var json = new byte[n];
        _stream.ReadExactly(json);
        long dataStart = 8 + (long)n, dataLength = fileLength - dataStart;

        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw Corrupt($"the header is not valid JSON ({e.Message})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Corrupt("the header is not a JSON object");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    foreach (var m in prop.Value.EnumerateObject()) metadata[m.Name] = m.Value.ToString();
                    continue;
                }
                try
                {
                    var dtype = prop.Value.GetProperty("dtype").GetString()!;
                    var shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    var off = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    var info = new SafeTensorInfo(prop.Name, dtype, shape, off[0], off[1]);
                    if (off.Length != 2 || off[0] < 0 || off[1] < off[0] || off[1] > dataLength)
                        throw Corrupt($"tensor '{prop.Name}' has data offsets [{string.Join(", ", off)}] outside the {dataLength} data bytes (truncated file?)");
                    if (info.ElementCount * SafeTensors.ElementSize(dtype) != info.ByteLength)
                        throw Corrupt($"tensor '{prop.Name}' ({dtype}, shape [{string.Join(", ", shape)}]) does not match its {info.ByteLength} bytes");
                    tensors[prop.Name] = info;
                }
                catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or IndexOutOfRangeException)
                {
                    throw Corrupt($"the entry for '{prop.Name}' is malformed ({e.Message})");
                }
            }
        }
        return (tensors, metadata, dataStart);
    }

    /// <summary>Reads one tensor into a new CPU tensor of its stored dtype (or converted to <paramref name="dtype"/>).</summary>
    public Tensor Read(string name, ScalarType? dtype = null)
    {
        if (!Tensors.TryGetValue(name, out var info))
            throw new KeyNotFoundException($"Tensor '{name}' is not in '{Path}'.");
        var stored = SafeTensors.ScalarTypeOf(info.DType);
        var t = empty(info.Shape, stored);
        if (info.ByteLength > 0)
        {
            _stream.Seek(_dataStart + info.Begin, SeekOrigin.Begin);
            _stream.ReadExactly(t.bytes);
        }
        if (dtype is { } want && want != stored)
        {
            var converted = t.to_type(want);
            t.Dispose();
            return converted;
        }
        return t;
    }

    /// <summary>
    /// Copies a stored tensor into <paramref name="destination"/> (any device/dtype), checking the shape; the error names
    /// the key, both shapes and the file.
    /// </summary>
    public void CopyInto(string name, Tensor destination)
    {
        if (!Tensors.TryGetValue(name, out var info))
            throw new InvalidDataException($"'{Path}' has no tensor '{name}'.");
        if (!info.Shape.SequenceEqual(destination.shape))
            throw new InvalidDataException($"Tensor '{name}' in '{Path}' has shape [{string.Join(", ", info.Shape)}], but the model expects [{string.Join(", ", destination.shape)}].");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (destination.device_type == DeviceType.CPU && destination.dtype == SafeTensors.ScalarTypeOf(info.DType)
            && destination.is_contiguous() && info.ByteLength is > 0 and <= int.MaxValue)
        {
            // Same dtype on the CPU: the file's bytes go straight into the parameter (no temporary, no second copy).
            _stream.Seek(_dataStart + info.Begin, SeekOrigin.Begin);
            _stream.ReadExactly(destination.bytes);
            return;
        }
        destination.copy_(Read(name));
    }

    public void Dispose() => _stream.Dispose();
}
