using LoopRpt.Inference;

namespace LoopRpt.AI;

/// <summary>
/// The model source of a LoopRpt Microsoft.Extensions.AI client (chat or embeddings): held, disposed with the client
/// when the client owns it, and offered by the client's <c>GetService</c> after its metadata and the client itself.
/// </summary>
internal sealed class HeldSource(ILoopRptModelSource source, bool owns) : IDisposable
{
    /// <summary>The source.</summary>
    public ILoopRptModelSource Source { get; } = source ?? throw new ArgumentNullException(nameof(source));

    /// <summary>
    /// <c>GetService</c> of <paramref name="client"/>: its <paramref name="metadata"/> for exactly the metadata type, then
    /// the client, then the source; null for a keyed service or anything else.
    /// </summary>
    public object? GetService(object client, object metadata, Type serviceType, object? serviceKey)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == metadata.GetType()) return metadata;
        if (serviceType.IsInstanceOfType(client)) return client;
        if (serviceType.IsInstanceOfType(Source)) return Source;
        return null;
    }

    /// <summary>Disposes the source when the client owns it.</summary>
    public void Dispose()
    {
        if (owns) (Source as IDisposable)?.Dispose();
    }
}
