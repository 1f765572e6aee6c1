using LoopRpt.Inference;

namespace LoopRpt.Hosting;

/// <summary>
/// The served version of a hosting <see cref="ModelStore"/> as an <see cref="ILoopRptModelSource"/>: each lease holds one
/// version (a promotion swaps the model for later leases; the old one is disposed when its last lease ends), with the
/// tokenizer the store opened it with (<see cref="ModelLease.Codec"/>).
/// </summary>
public sealed class ModelStoreSource : ILoopRptModelSource
{
    private readonly ModelStore _store;

    /// <summary>Serves <paramref name="store"/>'s current version.</summary>
    public ModelStoreSource(ModelStore store, string modelId = "looprpt")
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        ArgumentException.ThrowIfNullOrWhiteSpace(modelId);
        ModelId = modelId;
    }

    /// <inheritdoc/>
    public string ModelId { get; }

    /// <inheritdoc/>
    public LoopRptModelLease Acquire()
    {
        var lease = _store.Acquire();
        try
        {
            return new LoopRptModelLease(lease.Model, lease.Codec, lease.Version, lease.Dispose);
        }
        catch
        {
            lease.Dispose();
            throw;
        }
    }
}
