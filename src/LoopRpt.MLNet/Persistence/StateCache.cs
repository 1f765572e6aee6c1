using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace LoopRpt.MLNet.Persistence;

/// <summary>
/// Decoded states by the identity of the string ValueMapping hands out (one decode per model, not per row), falling back
/// to a content hash so two copies of the same state share one decoded object.
/// </summary>
internal static class StateCache<T> where T : class
{
    private static readonly ConditionalWeakTable<object, T> ByReference = new();
    private static readonly Dictionary<string, WeakReference<T>> ByHash = new(StringComparer.Ordinal);
    private static readonly object Gate = new();

    public static T Get(ReadOnlyMemory<char> state, Func<string, T> create, Func<T, bool> valid)
    {
        var owner = Owner(state);
        if (owner is not null && ByReference.TryGetValue(owner, out var hit) && valid(hit)) return hit;
        lock (Gate)
        {
            if (owner is not null && ByReference.TryGetValue(owner, out hit) && valid(hit)) return hit;
            if (state.IsEmpty) throw new InvalidDataException("The LoopRpt state column is empty: the ML.NET model is incomplete or was not saved by LoopRpt.");
            var hash = Hash(state.Span);
            if (!(ByHash.TryGetValue(hash, out var weak) && weak.TryGetTarget(out var value) && valid(value)))
            {
                value = create(state.ToString());
                ByHash[hash] = new WeakReference<T>(value);
            }
            if (owner is not null) ByReference.AddOrUpdate(owner, value);
            return value;
        }
    }

    /// <summary>Makes a live object the decoded form of <paramref name="state"/> (the in-process model shares its engine).</summary>
    public static void Register(string state, T value)
    {
        lock (Gate)
        {
            ByReference.AddOrUpdate(state, value);
            ByHash[Hash(state.AsSpan())] = new WeakReference<T>(value);
        }
    }

    /// <summary>Forgets every decoded state (tests use it to force decoding from a saved model).</summary>
    internal static void Clear()
    {
        lock (Gate)
        {
            ByReference.Clear();
            ByHash.Clear();
        }
    }

    private static object? Owner(ReadOnlyMemory<char> m)
    {
        if (MemoryMarshal.TryGetString(m, out var s, out _, out _)) return s;
        if (MemoryMarshal.TryGetArray(m, out ArraySegment<char> seg)) return seg.Array;
        return null;
    }

    private static string Hash(ReadOnlySpan<char> chars) => Convert.ToHexString(SHA256.HashData(MemoryMarshal.AsBytes(chars)));
}
