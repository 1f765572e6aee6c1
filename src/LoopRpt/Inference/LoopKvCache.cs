using static TorchSharp.torch;

namespace LoopRpt.Inference;

/// <summary>
/// Keys and values of a looped model, one slot per (loop t, layer l) (docs/method.md §1). Keys and values live in one
/// tensor laid out (2, L, T, B, C, kv, D), keys first, so slot (t, l) is a contiguous block (B, C, kv, D): writing a
/// token is a row copy and reading is a transposed view (B, kv, len, D). The flat row of the key of (layer l, loop t,
/// batch row b, position p) is ((l * T + t) * B + b) * C + p (<see cref="FlatRow"/>), its value's row
/// <see cref="ValueOffset"/> further; the staggered decoder addresses single rows through them.
/// <para>
/// <b>Fill rule for exited tokens</b> (docs/adaptive-exit.md): a token that exits after loop e has no keys/values of its
/// own at loops t &gt; e. Slot (t, l) then holds a copy of slot (e, l): the keys/values of the last loop the token
/// actually ran. The Ouro paper found at decode time that reusing the last available loop's KV keeps quality, while
/// first-step KV does not. The copy is made by <see cref="CarryForward"/> before loop t writes its active tokens.
/// </para>
/// <para>
/// A <i>rolling</i> cache (teacher-forced scoring of whole sequences) keeps one slot per layer: later loops overwrite
/// the active tokens' rows and exited tokens' rows simply keep the values of their exit loop, which is the same rule
/// without the copies. Rolling caches cannot be extended by later chunks.
/// </para>
/// </summary>
internal sealed class LoopKvCache : IDisposable
{
    private readonly Tensor _all;                 // (2 * L * T' * B * C, kv, D), T' = T, or 1 when rolling; keys, then values
    private readonly Tensor _allKeys, _allValues; // the two halves of _all
    private readonly Tensor[] _keys, _values;     // per slot (B * C, kv, D): views of the above
    private readonly int _layers, _slotLoops;

    /// <param name="batch">Rows B.</param>
    /// <param name="capacity">Positions C per row.</param>
    /// <param name="loops">Loops T.</param>
    /// <param name="layers">Physical layers L.</param>
    /// <param name="kvHeads">Key/value heads.</param>
    /// <param name="headDim">Head width D.</param>
    /// <param name="rolling">One slot per layer (scoring) instead of one per (loop, layer) (generation).</param>
    /// <param name="device">Device of the model.</param>
    /// <param name="dtype">Element type of the model.</param>
    public LoopKvCache(long batch, long capacity, int loops, int layers, int kvHeads, int headDim, bool rolling, Device device, ScalarType dtype)
    {
        Batch = batch;
        Capacity = capacity;
        Rolling = rolling;
        Loops = loops;
        _layers = layers;
        _slotLoops = rolling ? 1 : loops;
        int slots = _slotLoops * layers;
        // Never-written rows stay zero; only positions no query can see (right padding, finished rows) are never written.
        ValueOffset = slots * batch * capacity;
        // The cache owns its tensors (Dispose), whatever dispose scope it is created in.
        _all = zeros([2 * ValueOffset, kvHeads, headDim], dtype: dtype, device: device).DetachFromDisposeScope();
        Bytes = _all.numel() * _all.element_size();
        _liveBytes += Bytes;
        PeakBytesOnThisThread = Math.Max(PeakBytesOnThisThread, _liveBytes);
        _allKeys = _all.narrow(0, 0, ValueOffset).DetachFromDisposeScope();
        _allValues = _all.narrow(0, ValueOffset, ValueOffset).DetachFromDisposeScope();
        _keys = new Tensor[slots];
        _values = new Tensor[slots];
        for (int t = 0; t < _slotLoops; t++)
            for (int l = 0; l < layers; l++)
            {
                long start = FlatRow(l, t, 0, 0);
                _keys[Slot(t, l)] = _allKeys.narrow(0, start, batch * capacity).DetachFromDisposeScope();
                _values[Slot(t, l)] = _allValues.narrow(0, start, batch * capacity).DetachFromDisposeScope();
            }
    }

    public long Batch { get; }

    /// <summary>Bytes of keys and values held: 2 · L · T' · B · C · kv · D elements.</summary>
    public long Bytes { get; }

    // Caches alive on this thread and their high-water mark (tests: how many caches a generation holds at once).
    [ThreadStatic] private static long _liveBytes;

    /// <summary>The most bytes of caches alive at once on this thread since the last reset (tests).</summary>
    [field: ThreadStatic]
    internal static long PeakBytesOnThisThread { get; set; }

    /// <summary>Bytes of caches alive on this thread now (tests).</summary>
    internal static long LiveBytesOnThisThread => _liveBytes;

    public long Capacity { get; }

    public bool Rolling { get; }

    public int Loops { get; }

    /// <summary>Positions already written for every row (the next chunk starts here).</summary>
    public long Length { get; internal set; }

    private int Slot(int t, int l) => Rolling ? l : t * _layers + l;

    /// <summary>Flat row of (layer l, loop t, batch row b, position p) in <see cref="AllKeys"/>/<see cref="AllValues"/>.
    /// A rolling cache has one slot per layer, whatever t.</summary>
    public long FlatRow(int l, int t, long b, long p) => ((l * (long)_slotLoops + (Rolling ? 0 : t)) * Batch + b) * Capacity + p;

    /// <summary>Loop slots per layer: T, or 1 for a rolling cache.</summary>
    public int SlotLoops => _slotLoops;

    /// <summary>Every key and value, (2 * L * T * B * C, kv, D): keys at <see cref="FlatRow"/>, values <see cref="ValueOffset"/> rows further.</summary>
    public Tensor All => _all;

    /// <summary>Rows between a key and its value in <see cref="All"/>.</summary>
    public long ValueOffset { get; }

    /// <summary>Every key, (L * T * B * C, kv, D), rows numbered by <see cref="FlatRow"/>.</summary>
    public Tensor AllKeys => _allKeys;

    /// <summary>Every value, laid out as <see cref="AllKeys"/>.</summary>
    public Tensor AllValues => _allValues;

    /// <summary>Layers L.</summary>
    public int Layers => _layers;

    /// <summary>
    /// Writes the active tokens' keys/values of loop t, layer l and returns the slot's keys and values for positions
    /// [0, offset + s), each (B, kv, offset + s, D).
    /// </summary>
    /// <param name="t">Loop.</param>
    /// <param name="l">Layer.</param>
    /// <param name="rows">Flat row indices b * C + position of the active tokens, (n); null when the chunk is whole and every token is active.</param>
    /// <param name="k">Keys (n, kv, D), RoPE applied.</param>
    /// <param name="v">Values (n, kv, D).</param>
    /// <param name="offset">First position of the chunk.</param>
    /// <param name="s">Chunk length.</param>
    public (Tensor K, Tensor V) Write(int t, int l, Tensor? rows, Tensor k, Tensor v, long offset, long s)
    {
        int slot = Slot(t, l);
        var keys = _keys[slot];
        var values = _values[slot];
        if (rows is null)
        {
            keys.view(Batch, Capacity, k.shape[1], k.shape[2]).narrow(1, offset, s).copy_(k.view(Batch, s, k.shape[1], k.shape[2]));
            values.view(Batch, Capacity, v.shape[1], v.shape[2]).narrow(1, offset, s).copy_(v.view(Batch, s, v.shape[1], v.shape[2]));
        }
        else
        {
            keys.index_copy_(0, rows, k);
            values.index_copy_(0, rows, v);
        }
        return (Read(keys, offset + s), Read(values, offset + s));
    }

    private Tensor Read(Tensor flat, long length)
        => flat.view(Batch, Capacity, flat.shape[1], flat.shape[2]).narrow(1, 0, length).transpose(1, 2); // (B, kv, len, D)

    /// <summary>
    /// Fill rule: before loop t writes its active tokens, copy loop t-1's keys/values of positions [offset, offset + s)
    /// into loop t's slots, so tokens that have exited keep their exit loop's keys/values. No-op for a rolling cache.
    /// </summary>
    public void CarryForward(int t, long offset, long s)
    {
        if (Rolling || t == 0) return;
        for (int l = 0; l < _layers; l++)
        {
            Copy(_keys[Slot(t - 1, l)], _keys[Slot(t, l)]);
            Copy(_values[Slot(t - 1, l)], _values[Slot(t, l)]);
        }

        void Copy(Tensor from, Tensor to)
        {
            long kv = from.shape[1], d = from.shape[2];
            to.view(Batch, Capacity, kv, d).narrow(1, offset, s).copy_(from.view(Batch, Capacity, kv, d).narrow(1, offset, s));
        }
    }

    /// <summary>Keys of slot (t, l) for positions [0, length), (B, kv, length, D): for tests and diagnostics.</summary>
    public Tensor Keys(int t, int l, long length) => Read(_keys[Slot(t, l)], length);

    /// <summary>Values of slot (t, l) for positions [0, length), (B, kv, length, D).</summary>
    public Tensor Values(int t, int l, long length) => Read(_values[Slot(t, l)], length);

    public void Dispose()
    {
        if (_all.IsInvalid) return;
        _liveBytes -= Bytes;
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
        _allKeys.Dispose();
        _allValues.Dispose();
        _all.Dispose();
    }
}
